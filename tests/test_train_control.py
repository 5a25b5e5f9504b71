"""Controlling a training run: --max-steps/--max-time, gradient accumulation, --print-config, honest
resume (what may change, the exact hint line), the run-folder lock and checks, SIGINT, --keep pruning,
file modes and the warnings for settings that do not fit the data (issues 14, 18, 20, 21).

Everything runs a tiny model on embedded data in-process (or through the in-process CLI runner), so
the module stays fast; references are independent runs (an uninterrupted run, batch 64 without
accumulation) compared bit for bit or to float summation order.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_interrupt import Live, assert_same_weights, clean_env, state_step
from typer.testing import CliRunner

from aecli.checkpoint import load_model
from aecli.cli import app
from aecli.errors import Interrupted, UsageError
from aecli.locking import LOCK_FILE, FolderLock
from aecli.training import TrainConfig, train
from aecli.training.config import parse_duration
from aecli.training.setup import fit_warnings
from aecli.training.trainer import Trainer

runner = CliRunner()
VAE = {"widths": (4, 8), "latent_dim": 4}  # conv-vae draws noise every step: resume must keep the RNG exact
SPE = 5  # 48 shapes, 10 % validation → 43 training images // batch 8


def cfg(out: Path, family: str = "conv-vae", **kw: object) -> TrainConfig:
    base = dict(family=family, model=dict(VAE) if family == "conv-vae" else {"hidden": (32,), "latent_dim": 8},
                data="shapes:48", image_size=16, channels=1, batch_size=8, device="cpu", workers=1, grid_size=2,
                seed=3, out=str(out), log_every=1000)
    base.update(kw)
    return TrainConfig(**base)  # type: ignore[arg-type]


def cli(*args: object) -> tuple[int, str]:
    res = runner.invoke(app, [str(a) for a in args])
    assert "Traceback" not in res.output, res.output
    return res.exit_code, res.output


def epoch_rows(run: Path) -> list[dict]:
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "elapsed_s"} for r in rows if r["kind"] == "epoch"]


@pytest.fixture(scope="module", autouse=True)
def _single_thread(one_thread: None) -> None:
    """Every test and fixture of this module runs on one torch thread (conftest.one_thread)."""


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two uninterrupted epochs (10 steps): what every stopped-and-resumed run must equal."""
    out = tmp_path_factory.mktemp("ref") / "run"
    assert train(cfg(out, epochs=2)).steps == 2 * SPE
    return out


# -- issue 14.6: --max-steps and --max-time ---------------------------------------------------------
def test_max_steps_stops_exactly_is_recorded_and_resumes_exactly(reference: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    first = train(cfg(out, max_steps=7))  # mid epoch 2; --epochs not given: as many as the steps need
    assert (first.steps, first.stopped) == (7, "--max-steps 7")
    assert state_step(out) == (7, 1, 2)
    header = load_model(out / "last.safetensors").header
    assert header.training["steps"] == 7 and header.training["max_steps"] == 7
    assert header.training["stopped"] == "--max-steps 7" and set(header.training["val"]) >= {"loss", "kl"}
    assert json.loads((out / "config.json").read_text())["max_steps"] == 7
    assert first.resume_hint == f"aecli train --resume {out} --max-steps 7"
    again = train(cfg(out, max_steps=7), resume=str(out))  # already there: nothing to do, nothing changes
    assert again.steps == 7 and state_step(out) == (7, 1, 2)
    done = train(cfg(out, max_steps=2 * SPE), resume=str(out))
    assert (done.steps, done.epochs) == (2 * SPE, 2)
    assert_same_weights(out / "last.safetensors", reference / "last.safetensors")
    assert_same_weights(out / "best.safetensors", reference / "best.safetensors")
    assert epoch_rows(out) == epoch_rows(reference)


def test_max_steps_caps_epochs_whichever_comes_first(tmp_path: Path) -> None:
    assert train(cfg(tmp_path / "a", epochs=1, max_steps=100)).steps == SPE
    assert train(cfg(tmp_path / "b", epochs=3, max_steps=SPE)).steps == SPE  # at an epoch end: full epoch work
    assert [r["epoch"] for r in epoch_rows(tmp_path / "b")] == [1, 1]


def test_max_time_stops_at_the_next_step_saves_exits_0_and_resumes_exactly(
        reference: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "run"
    # The clock runs out during step 3 (the deadline itself is checked below, without timing a run).
    monkeypatch.setattr(Trainer, "_out_of_time", lambda self: self.counters.step >= 3)
    code, text = cli("train", "conv-vae", "-m", "widths=4,8", "-m", "latent_dim=4", "--data", "shapes:48",
                     "--image-size", 16, "--channels", 1, "--batch-size", 8, "--device", "cpu", "--workers", 1,
                     "--grid-columns", 2, "--seed", 3, "--epochs", 2, "--max-time", "1h30m", "--out", out)
    assert code == 0, text
    hint = f"aecli train --resume {out} --epochs 2 --max-time 1h30m"
    assert f"stopped at --max-time 1h30m: 3 steps; state saved in {out}. Continue with: {hint}" in text
    assert state_step(out) == (3, 0, 3)
    monkeypatch.undo()
    code, text = cli(*shlex.split(hint)[1:])  # the printed line, verbatim
    assert code == 0, text
    assert_same_weights(out / "last.safetensors", reference / "last.safetensors")
    assert epoch_rows(out) == epoch_rows(reference)


def test_max_time_deadline_counts_from_the_start(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert [parse_duration(t) for t in ("600", "90m", "1h30m", "2d", "45s", "00:01:30:00", "1:00")] == \
        [600, 5400, 5400, 172800, 45, 5400, 60]
    trainer = Trainer(cfg(tmp_path / "run", max_time="90m"), tmp_path / "run", resume=False, started=1000.0)
    assert trainer.deadline == 1000.0 + 5400
    monkeypatch.setattr("aecli.training.trainer.time.time", lambda: 1000.0 + 5399.9)
    assert not trainer._out_of_time()
    monkeypatch.setattr("aecli.training.trainer.time.time", lambda: 1000.0 + 5400.0)
    assert trainer._out_of_time()


# -- issue 18.2: gradient accumulation --------------------------------------------------------------
def test_batch_32_with_2_accumulation_steps_trains_like_batch_64(tmp_path: Path) -> None:
    """mlp-ae (no noise, no batch statistics) on 400 shapes: per-element mean losses, so the mean of
    two half-batch gradients is the batch-64 gradient (up to float summation order)."""
    common = dict(family="mlp-ae", data="shapes:400", epochs=2)
    big = train(cfg(tmp_path / "b64", batch_size=64, **common))
    code, text = cli("train", "mlp-ae", "-m", "hidden=32", "-m", "latent_dim=8", "--data", "shapes:400",
                     "--image-size", 16, "--channels", 1, "--batch-size", 32, "--grad-accum-steps", 2, "--epochs", 2,
                     "--device", "cpu", "--workers", 1, "--grid-columns", 2, "--seed", 3, "--out", tmp_path / "acc")
    assert code == 0, text
    assert "batch 32 × 2 accumulated = effective batch 64; 10 steps" in text
    a, b = load_file(str(tmp_path / "acc" / "last.safetensors")), load_file(str(tmp_path / "b64" / "last.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], rtol=0, atol=1e-6), (k, (a[k] - b[k]).abs().max())
    training = load_model(tmp_path / "acc" / "last.safetensors").header.training
    assert (training["batch_size"], training["grad_accum_steps"], training["effective_batch"]) == (32, 2, 64)
    assert [r["images"] for r in epoch_rows(tmp_path / "acc")] == [r["images"] for r in epoch_rows(tmp_path / "b64")]
    for acc_row, big_row in zip(epoch_rows(tmp_path / "acc"), epoch_rows(tmp_path / "b64")):
        assert acc_row["loss"] == pytest.approx(big_row["loss"], rel=1e-5)
    assert big.steps == 10
    # Negative control: batch 32 without accumulation takes other steps and ends elsewhere.
    small = train(cfg(tmp_path / "b32", batch_size=32, **common))
    c = load_file(str(tmp_path / "b32" / "last.safetensors"))
    assert small.steps == 22 and any((c[k] - b[k]).abs().max() > 1e-3 for k in c)


# -- issue 18.3: --print-config ---------------------------------------------------------------------
def test_print_config_feeds_back_into_the_same_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from aecli.commands.train import build_config, load_toml

    monkeypatch.chdir(tmp_path)
    base = tmp_path / "base.toml"
    base.write_text('family = "conv-vae"\nlr = 0.002\nbetas = [0.5, 0.999]\nval_count = 8\n[model]\nwidths = [4, 8]\n')
    code, text = cli("train", "--config", base, "-m", "latent_dim=4", "--max-steps", 30, "--data", "shapes:40",
                     "--grad-accum-steps", 2, "--print-config")
    assert code == 0, text
    assert not (tmp_path / "runs").exists()  # printed, nothing trained
    printed = tomllib.loads(text)
    assert printed["family"] == "conv-vae" and printed["lr"] == 0.002 and printed["max_steps"] == 30
    assert printed["image_size"] == 32 and printed["channels"] == 3  # resolved from the data
    assert printed["model"] == {"widths": [4, 8], "latent_dim": 4} and printed["grad_accum_steps"] == 2
    (tmp_path / "run.toml").write_text(text)
    code, again = cli("train", "--config", tmp_path / "run.toml", "--print-config")
    assert code == 0 and again == text
    toml = load_toml(tmp_path / "run.toml")
    a = build_config(toml["family"], {}, set(), toml)
    b = build_config("conv-vae", {}, set(), {**load_toml(base), "model": {"widths": [4, 8], "latent_dim": 4},
                                              "max_steps": 30, "data": "shapes:40", "grad_accum_steps": 2,
                                              "image_size": 32, "channels": 3})
    assert a == b


# -- issues 20.4, 20.10, 21.8: honest resume --------------------------------------------------------
def test_resume_needs_no_family_refuses_another_and_options_that_cannot_change(tmp_path: Path) -> None:
    out = tmp_path / "run"
    train(cfg(out, epochs=1, command_line="aecli train conv-vae --epochs 1"))
    code, text = cli("train", "conv-ae", "--resume", out)
    assert code == 2 and f"{out} is a conv-vae run; it cannot continue as conv-ae" in text
    code, text = cli("train", "--resume", out, "--lr", "0.5", "--batch-size", "7", "-m", "latent_dim=9")
    assert code == 2 and text.count("\n") == 1
    for part in ("--batch-size 7 (the run has 8)", "--lr 0.5 (the run has 0.001)", "-m latent_dim=9 (the run has 4)",
                 "a resume may change only --epochs, --max-steps, --max-time"):
        assert part in text, text
    code, text = cli("train", "--resume", out, "--epochs", "2", "--lr", "0.001", "--log-every", "3")  # same lr: fine
    assert code == 0, text
    saved = json.loads((out / "config.json").read_text())
    assert (saved["epochs"], saved["log_every"], saved["lr"]) == (2, 3, 0.001)  # what `report` reads
    lines = (out / "command.txt").read_text().splitlines()
    assert lines[0] == "aecli train conv-vae --epochs 1" and "--resume" in lines[1] and "--epochs 2" in lines[1]
    assert load_model(out / "last.safetensors").header.training["steps"] == 2 * SPE


def test_the_printed_resume_line_continues_the_same_run(reference: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """After SIGTERM the hint names --epochs: following it trains to the run's 2 epochs, not the default 10."""
    out = tmp_path / "run"
    original = Trainer._update_ema

    def sigterm_in_step_4(self: Trainer) -> None:
        original(self)
        if self.counters.step + 1 == 4:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(Trainer, "_update_ema", sigterm_in_step_4)
    with pytest.raises(Interrupted) as info:
        train(cfg(out, epochs=2))
    monkeypatch.undo()
    assert str(info.value).endswith(f"Resume with: aecli train --resume {out} --epochs 2")
    code, text = cli(*shlex.split(str(info.value).split("Resume with: ")[1])[1:])
    assert code == 0 and f"done: {2 * SPE} steps, 2 epochs" in text, text
    assert_same_weights(out / "last.safetensors", reference / "last.safetensors")


# -- issue 20.9: Ctrl-C -------------------------------------------------------------------------------
def test_ctrl_c_saves_like_sigterm_and_a_second_one_aborts_at_once(reference: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "run"
    original = Trainer._update_ema
    before = signal.getsignal(signal.SIGINT)  # default_int_handler, or SIG_IGN in a background job

    def ctrl_c(times: int):
        def hook(self: Trainer) -> None:
            original(self)
            if self.counters.step + 1 == 3:
                for _ in range(times):
                    os.kill(os.getpid(), signal.SIGINT)
        return hook

    monkeypatch.setattr(Trainer, "_update_ema", ctrl_c(1))
    with pytest.raises(Interrupted, match="stopped by SIGINT at step 3;"):
        train(cfg(out, epochs=2))
    assert state_step(out)[0] == 3
    assert signal.getsignal(signal.SIGINT) is before  # put back
    monkeypatch.setattr(Trainer, "_update_ema", ctrl_c(2))
    with pytest.raises(KeyboardInterrupt):
        train(cfg(tmp_path / "twice", epochs=2))
    assert not (tmp_path / "twice" / "state.safetensors").exists()  # aborted inside step 3: nothing saved
    monkeypatch.undo()
    train(cfg(out, epochs=2), resume=str(out))
    assert_same_weights(out / "last.safetensors", reference / "last.safetensors")


# -- issue 20.1, 21.9: which folders a run may use, and what a failed start leaves ------------------
def test_a_fresh_run_refuses_a_folder_that_is_not_its_own(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    user = {"best.safetensors": b"user's model", "metrics.csv": b"a,b\n1,2\n", ".notes.abcdefgh.tmp": b"mine"}
    for name, data in user.items():
        (out / name).write_bytes(data)
    with pytest.raises(UsageError, match=r"is not empty \(\.notes\.abcdefgh\.tmp, best\.safetensors, metrics\.csv\) "
                                         r"and holds no run state to continue"):
        train(cfg(out, epochs=1))
    assert {p.name: p.read_bytes() for p in out.iterdir()} == user  # untouched, no lock left behind


def test_an_earlier_start_of_the_same_run_is_continued_afresh(tmp_path: Path) -> None:
    """A kill before the first checkpoint leaves config.json and temp files, no state: same config → start."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text(json.dumps(cfg(out, epochs=1, log_every=7).to_dict()))
    (out / ".last.safetensors.abcdefgh.tmp").write_bytes(b"half")
    assert train(cfg(out, epochs=1)).steps == SPE
    assert not (out / ".last.safetensors.abcdefgh.tmp").exists()
    (out / "state.safetensors").unlink()
    with pytest.raises(UsageError, match="not empty"):  # another run's config: not this run
        train(cfg(out, epochs=1, lr=0.5))


def test_a_failed_start_leaves_no_half_made_run_folder(tmp_path: Path) -> None:
    code, text = cli("train", "conv-ae", "--data", tmp_path / "no-such-data", "--out", tmp_path / "runs" / "a")
    assert code == 2 and "no-such-data" in text
    assert not (tmp_path / "runs").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UsageError, match="larger than the training split"):
        train(cfg(empty, batch_size=1000))
    assert list(empty.iterdir()) == []  # no config.json, no command.txt, no lock


# -- issue 20.2: the lock -----------------------------------------------------------------------------
def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_the_run_folder_lock_refuses_live_holders_and_breaks_stale_ones(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    lock = out / LOCK_FILE
    with FolderLock(out, "test"):  # this very process holds it
        data = json.loads(lock.read_text())
        assert data["pid"] == os.getpid() and data["host"] == socket.gethostname()
        with pytest.raises(UsageError, match=rf"{out} is in use by .* \(pid {os.getpid()}, since"):
            train(cfg(out, epochs=1))
        assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE]
    assert not lock.exists()
    lock.write_text(json.dumps({"host": "node-17", "pid": 4242, "command": "aecli train x"}))
    with pytest.raises(UsageError, match="pid 4242 on host node-17.*if that process is gone delete"):
        train(cfg(out, epochs=1))
    lock.write_text("garbage")
    with pytest.raises(UsageError, match="not a lock aecli can read"):
        train(cfg(out, epochs=1))
    # Stale: the holder died (kill -9), or its pid now belongs to a later process (pid reuse).
    for holder in ({"pid": _dead_pid()}, {"pid": os.getpid(), "started": "1"}):
        lock.write_text(json.dumps({"host": socket.gethostname(), **holder}))
        with FolderLock(out, "test") as mine:
            assert json.loads(lock.read_text()) == mine.mine
    assert train(cfg(out, epochs=1)).steps == SPE and not lock.exists()


def test_two_trainings_on_one_folder_the_second_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["train", "mlp-ae", "-m", "hidden=16", "-m", "latent_dim=4", "--data", "shapes:400", "--image-size", "16",
            "--channels", "1", "--batch-size", "4", "--epochs", "50", "--device", "cpu", "--workers", "1",
            "--log-every", "1", "--out", str(out)]
    first = Live(args)
    first.wait_for(r"step 1/")
    second = subprocess.run([sys.executable, "-m", "aecli", *args], capture_output=True, text=True,
                            env=clean_env(), timeout=120)
    first.proc.send_signal(signal.SIGTERM)
    assert first.finish() == 75
    assert second.returncode == 2, second.stderr
    assert f"{out} is in use by" in second.stderr and f"pid {first.proc.pid}" in second.stderr
    assert second.stderr.count("\n") == 1
    assert json.loads((out / "config.json").read_text())["epochs"] == 50 and not (out / LOCK_FILE).exists()


def test_sample_into_a_folder_in_use_is_refused(tmp_path: Path) -> None:
    from conftest import tiny_model

    from aecli.checkpoint import save_model
    from aecli.data.spec import DataSpec
    from aecli.inference import sample

    model = tiny_model("conv-vae", 16, 1)
    ckpt = save_model(tmp_path / "vae.safetensors", model, DataSpec(16, 1, model.value_range, [], "test"))
    folder = tmp_path / "samples"
    folder.mkdir()
    with FolderLock(folder, "other"):
        with pytest.raises(UsageError, match="is in use by"):
            sample(ckpt, folder, n=4, device="cpu", progress=False)
        assert not list(folder.glob("sample_*.png"))
    assert sample(ckpt, folder, n=4, device="cpu", progress=False).written == 4
    assert not (folder / LOCK_FILE).exists()


# -- issue 20.5, 20.8: pruning and file modes ------------------------------------------------------
def test_keep_prunes_only_the_periodic_files_aecli_wrote(tmp_path: Path) -> None:
    out = tmp_path / "run"
    train(cfg(out, epochs=1, save_every_steps=1, keep=2))
    (out / "step-before-lr-change.safetensors").write_bytes(b"user")
    (out / "step7.safetensors").write_bytes(b"user")
    train(cfg(out, epochs=2, save_every_steps=1, keep=2), resume=str(out))
    assert sorted(p.name for p in out.glob("step*.safetensors")) == [
        "step-before-lr-change.safetensors", "step00000009.safetensors", "step00000010.safetensors",
        "step7.safetensors"]


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_every_output_file_follows_the_umask(umask: int, tmp_path: Path) -> None:
    old = os.umask(umask)
    try:
        train(cfg(tmp_path / "run", epochs=1))
    finally:
        os.umask(old)
    files = [p for p in (tmp_path / "run").rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"last.safetensors", "state.safetensors", "metrics.csv", "config.json"}
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in files} == {p.name: oct(0o666 & ~umask) for p in files}


# -- issue 21.10: settings that no longer fit the data ----------------------------------------------
def test_recipe_settings_on_substitute_data_and_small_folders_warn(tmp_path: Path) -> None:
    recipe = cfg(tmp_path, data="digits", val_count=1000, batch_size=64)
    warnings = fit_warnings(recipe, 1797, 797, 64, 256, 52_000_000)
    assert warnings[0] == ("--val-count 1000 takes 56% of the 1,797 images of digits, leaving 797 to train on; the "
                           "setting was written for a larger data set (lower it, e.g. --val-count 179)")
    assert warnings[1].startswith("digits images are 8×8 px, upscaled 32× to 256 px for a 52,000,000-parameter model")
    assert warnings[1].endswith("use --data shapes:240 --image-size 32 --val-count 24")
    assert len(warnings) == 2  # 797 // 64 = 12 steps leave 29 images (4 %) unused: no batch warning
    small = fit_warnings(cfg(tmp_path, batch_size=64), 200, 180, 64, 32, 10_000)
    assert small == ["180 training images at batch 64: 2 step(s) per epoch and 52 images unused each epoch (the last "
                     "partial batch is dropped); --batch-size 16 uses nearly all of them"]
    assert fit_warnings(cfg(tmp_path, data="digits", batch_size=64), 1797, 1617, 64, 32, 10_000) == []
    code, text = cli("train", "mlp-ae", "-m", "hidden=8", "-m", "latent_dim=2", "--data", "shapes:200", "--image-size",
                     16, "--channels", 1, "--epochs", 1, "--device", "cpu", "--workers", 1, "--out", tmp_path / "r")
    assert code == 0 and "warning: 180 training images at batch 64: 2 step(s) per epoch and 52 images" in text
