"""Faults: kill -9 at many exact points of training (inside every kind of write), a full disk, unusable
output folders, NaN weights, a killed `sample` into thousands of files; and a scan of the package for
code-executing loaders. SIGTERM/SIGUSR1 and random kills are in test_interrupt.py; this module adds
the exact kill points.

Kill points run in forked children of one driver process (`python tests/test_reliability.py`), which
imports torch and aecli once and never runs a torch op itself, so every fork starts clean and fast.
Each child installs one hook that SIGKILLs it at its point: in the middle of a file write (the temp file
truncated to half, as a kill during write() leaves it), before or after an os.replace, inside a step.
"""

from __future__ import annotations

import ast
import errno
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from aecli.locking import LOCK_FILE

FAMILY = "conv-vae"  # VAE noise from the global RNG: resume exactness needs the RNG state restored
PACKAGE = Path(__file__).resolve().parents[1] / "aecli"
runner = CliRunner()


def train_config(out: Path, **kw: Any) -> Any:
    """2 epochs × 2 steps of a tiny conv-vae on 24 embedded shapes, a checkpoint every step."""
    sys.path.insert(0, str(Path(__file__).parent))
    from conftest import tiny_kwargs

    from aecli.training import TrainConfig

    model = tiny_kwargs(FAMILY)
    size, channels = model.pop("image_size"), model.pop("channels")
    base = dict(family=FAMILY, model=model, data="shapes:24", image_size=size, channels=channels, val_count=8,
                epochs=2, batch_size=8, device="cpu", workers=1, grid_size=2, seed=3, out=str(out), log_every=1,
                save_every_steps=1, keep=2)
    base.update(kw)
    return TrainConfig(**base)  # type: ignore[arg-type]


# -- the kill points ------------------------------------------------------------------------------------
# name → hook: on (fsync | replace | step | unlink | append), match (file name part), nth occurrence,
# mode (half: temp file cut to half then kill; full: temp file complete, not yet renamed; before/after
# an os.replace or unlink). 2 steps per epoch, so step 3 is inside epoch 2.
KILL_POINTS: dict[str, dict[str, Any]] = {
    "config.json mid-write at start": {"on": "fsync", "match": "config.json", "nth": 1, "mode": "half"},
    "inside step 1, before any checkpoint": {"on": "step", "nth": 1},
    "inside step 3": {"on": "step", "nth": 3},
    "last.safetensors mid-write": {"on": "fsync", "match": "last.safetensors", "nth": 2, "mode": "half"},
    "last.safetensors written, not renamed": {"on": "replace", "match": "last.safetensors", "nth": 3,
                                              "mode": "before"},
    "best.safetensors mid-write": {"on": "fsync", "match": "best.safetensors", "nth": 1, "mode": "half"},
    "periodic step file mid-write": {"on": "fsync", "match": "step0000", "nth": 3, "mode": "half"},
    "state.safetensors mid-write (last is newer)": {"on": "fsync", "match": "state.safetensors", "nth": 2,
                                                    "mode": "half"},
    "state.safetensors renamed": {"on": "replace", "match": "state.safetensors", "nth": 3, "mode": "after"},
    "pruning old periodic files": {"on": "unlink", "match": "step0000", "nth": 1, "mode": "after"},
    "metrics.jsonl line half-written": {"on": "append", "nth": 4},
    "metrics.csv mid-write": {"on": "fsync", "match": "metrics.csv", "nth": 1, "mode": "half"},
    "loss_curves.png mid-write": {"on": "fsync", "match": "loss_curves", "nth": 1, "mode": "half"},
    "grid PNG mid-write": {"on": "fsync", "match": "recon_e", "nth": 1, "mode": "half"},
}


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _install_hook(hook: dict[str, Any]) -> None:
    """In a forked child only: SIGKILL this process at the hook's point."""
    seen = {"n": 0}

    def hit(name: str) -> bool:
        if hook.get("match", "") in name:
            seen["n"] += 1
            return seen["n"] == hook["nth"]
        return False

    if hook["on"] == "fsync":
        original_fsync = os.fsync

        def fsync(fd: int) -> None:
            path = os.readlink(f"/proc/self/fd/{fd}")
            if hit(os.path.basename(path)):
                if hook["mode"] == "half":
                    os.truncate(path, os.path.getsize(path) // 2)
                _die()
            original_fsync(fd)

        os.fsync = fsync  # type: ignore[assignment]
    elif hook["on"] == "replace":
        original_replace = os.replace

        def replace(src: Any, dst: Any) -> None:
            if hit(os.path.basename(str(dst))):
                if hook["mode"] == "after":
                    original_replace(src, dst)
                _die()
            original_replace(src, dst)

        os.replace = replace  # type: ignore[assignment]
    elif hook["on"] == "unlink":
        original_unlink = Path.unlink

        def unlink(self: Path, missing_ok: bool = False) -> None:
            original_unlink(self, missing_ok=missing_ok)
            if hit(self.name):
                _die()

        Path.unlink = unlink  # type: ignore[method-assign]
    elif hook["on"] == "step":
        from aecli.training.trainer import Trainer

        original_ema = Trainer._update_ema

        def update_ema(self: Any) -> None:  # runs after the optimizer step, before the counters move on
            original_ema(self)
            if hit(""):
                _die()

        Trainer._update_ema = update_ema  # type: ignore[method-assign]
    elif hook["on"] == "append":
        from aecli.training.logs import MetricsLog
        from aecli.training.rundir import RunDir

        original_add = MetricsLog.add

        def add(self: Any, row: dict[str, Any]) -> None:
            if hit(""):
                line = json.dumps(row) + "\n"
                with open(RunDir(self.run_dir).metrics_jsonl, "a", encoding="utf-8") as fh:
                    fh.write(line[: len(line) // 2])
                _die()
            original_add(self, row)

        MetricsLog.add = add  # type: ignore[method-assign]
    else:
        raise ValueError(hook)


def _cheap_plots() -> None:
    """Drawing loss_curves.png costs ~1 s of matplotlib per epoch; the kill points other than the one
    inside that write get an atomic write of placeholder bytes instead (same file, same write path)."""
    from aecli.atomic import write_bytes
    from aecli.training.logs import MetricsLog
    from aecli.training.rundir import RunDir

    MetricsLog.plot = lambda self, force=False: write_bytes(RunDir(self.run_dir).loss_curves, b"placeholder")


def _child(run_dir: Path, hook: dict[str, Any] | None) -> int:
    """Fork: train (resume auto) in the child, with ``hook`` installed; return the wait status."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            torch.set_num_threads(1)
            if not hook or hook.get("match") != "loss_curves":
                _cheap_plots()
            if hook:
                _install_hook(hook)
            from aecli.training import train

            with open(os.devnull, "w") as null:
                sys.stdout = null
                train(train_config(run_dir), resume="auto")
        except BaseException as exc:  # noqa: BLE001 - reported to the parent through the exit code
            sys.stderr.write(f"child failed: {type(exc).__name__}: {exc}\n")
            code = 3
        finally:
            os._exit(code)
    return os.waitpid(pid, 0)[1]


def kill_driver(root: Path, names: list[str]) -> None:
    """Run the reference and every kill point; print one JSON line of results."""
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401  (imported once here, not in every child)

    import aecli.training.trainer  # noqa: F401

    warnings.simplefilter("ignore")
    # The reference runs here, in the driver: it pays for torch's lazy imports and first-op set-up once,
    # for every child. One thread, so no OpenMP pool exists to be inherited by the forks.
    torch.set_num_threads(1)
    _cheap_plots()
    from aecli.training import train

    stdout, sys.stdout = sys.stdout, open(os.devnull, "w")
    train(train_config(root / "reference"))
    sys.stdout = stdout
    results: dict[str, Any] = {"reference": 0}
    for i, name in enumerate(names):
        run_dir = root / f"point{i:02d}"
        killed = _child(run_dir, KILL_POINTS[name])
        if run_dir.exists():
            shutil.copytree(run_dir, root / f"point{i:02d}-killed", symlinks=True)
        resumed = _child(run_dir, None)
        results[name] = {"dir": str(run_dir), "killed": os.WIFSIGNALED(killed) and os.WTERMSIG(killed) == 9,
                         "resumed": os.WIFEXITED(resumed) and os.WEXITSTATUS(resumed) == 0}
    print(json.dumps(results))


def _epoch_rows(run_dir: Path) -> list[str]:
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [json.dumps({k: v for k, v in r.items() if k not in ("elapsed_s", "images_per_s")}, sort_keys=True)
            for r in rows]


def _same_weights(a: Path, b: Path) -> bool:
    ta, tb = load_file(str(a)), load_file(str(b))
    return ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)


@pytest.fixture(scope="module")
def kills(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    root = tmp_path_factory.mktemp("kills")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, __file__, "kill-driver", str(root), json.dumps(list(KILL_POINTS))],
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return root, json.loads(done.stdout.strip().splitlines()[-1])


def test_at_least_ten_kill_points_including_checkpoint_writes() -> None:
    assert len(KILL_POINTS) >= 10
    assert sum("safetensors" in name for name in KILL_POINTS) >= 5


@pytest.mark.parametrize("name", list(KILL_POINTS))
def test_kill_9_at_exact_point(name: str, kills: tuple[Path, dict[str, Any]]) -> None:
    """The child died at its point; what it left is loadable (or empty before the first checkpoint);
    resuming finishes; the result equals the uninterrupted run bit for bit, metrics rows included."""
    from aecli.checkpoint import load_model
    from aecli.training.state import load_state

    root, results = kills
    assert results["reference"] == 0
    res = results[name]
    assert res["killed"], f"{name}: the hook never fired (the child finished or failed)"
    killed = Path(res["dir"] + "-killed")
    checkpoints = [p for p in killed.glob("*.safetensors")]
    for p in checkpoints:  # every visible checkpoint is whole; partial data only in hidden temp files
        if p.name == "state.safetensors":
            load_state(killed)
        else:
            load_model(p)
    # The dead process's run-folder lock stays behind (hidden, never partial data); the resume takes it over.
    assert (killed / LOCK_FILE).exists()
    partial = [p.name for p in killed.iterdir() if p.name.startswith(".") and p.name != LOCK_FILE]
    assert all(n.endswith(".tmp") for n in partial), partial
    if (killed / "state.safetensors").exists():  # else: killed before the first checkpoint, resume starts afresh
        assert (killed / "last.safetensors").exists()
    assert res["resumed"], f"{name}: resuming failed"
    final, reference = Path(res["dir"]), root / "reference"
    for f in ("last.safetensors", "best.safetensors", "state.safetensors"):
        assert _same_weights(final / f, reference / f), f
    assert load_state(final).counters.step == load_state(reference).counters.step == 4
    assert _epoch_rows(final) == _epoch_rows(reference)
    assert sorted(p.name for p in final.glob("step*.safetensors")) == ["step00000003.safetensors",
                                                                       "step00000004.safetensors"]
    assert not list(final.glob(".*.tmp")), "stale temp files are removed on resume"
    assert not (final / LOCK_FILE).exists(), "the stale lock was taken over and released"


# -- disk full and write errors -------------------------------------------------------------------------
_FSIZE_CHILD = textwrap.dedent("""
    import resource, signal, sys
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() then fails with EFBIG instead of killing us
    limit = int(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    sys.argv = ["aecli", *sys.argv[2:]]
    from aecli.cli import main
    main()
""")


def _mlp_args(out: Path, *extra: str) -> list[str]:
    """mlp-ae with hidden 256 at 32 px: a 2 MB checkpoint, while logs, plots and grids stay < 1 MB."""
    return ["train", "mlp-ae", "-m", "hidden=256", "-m", "latent_dim=8", "--data", "shapes:40", "--image-size",
            "32", "--channels", "1", "--val-count", "8", "--batch-size", "8", "--device", "cpu", "--workers", "1",
            "--seed", "1", "--grid-columns", "2", "--out", str(out), *extra]


def test_file_size_limit_during_training_keeps_the_previous_checkpoint(tmp_path: Path) -> None:
    """RLIMIT_FSIZE (what a full quota looks like to a process): epoch 2's checkpoint cannot be
    written. Clear one-line error, exit 1, epoch 1's checkpoint and state intact, resume finishes."""
    from aecli.checkpoint import load_model
    from aecli.cli import app
    from aecli.training.state import load_state

    out = tmp_path / "run"
    first = runner.invoke(app, _mlp_args(out, "--epochs", "1"))
    assert first.exit_code == 0, first.output
    size = (out / "last.safetensors").stat().st_size
    assert size > 1_500_000
    before = {p.name: p.read_bytes() for p in out.glob("*.safetensors")}
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", _FSIZE_CHILD, str(1_000_000), *_mlp_args(out, "--epochs", "2",
                           "--resume", str(out))], capture_output=True, text=True, timeout=180, env=env)
    assert done.returncode == 1, (done.returncode, done.stderr[-2000:])
    err = done.stderr.strip()
    assert "Traceback" not in err and err.count("\n") == 0 and err.startswith("Error: "), err
    assert "File too large" in err and "check free space" in err, err
    assert {p.name: p.read_bytes() for p in out.glob("*.safetensors")} == before  # untouched, byte for byte
    assert load_model(out / "last.safetensors").header.training["epochs"] == 1
    assert load_state(out).counters.epoch == 1
    assert not list(out.glob(".*.tmp")), "the failed write's temp file is removed"
    again = runner.invoke(app, _mlp_args(out, "--epochs", "2", "--resume", str(out)))
    assert again.exit_code == 0, again.output
    assert load_model(out / "last.safetensors").header.training["epochs"] == 2


def test_no_space_left_while_writing_the_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ENOSPC in the middle of state.safetensors (after last.safetensors was replaced): exit 1 with
    the system's message; the previous state stays whole and resuming from it is exact."""
    import safetensors.torch

    from aecli.cli import app
    from aecli.training.state import load_state

    ref = runner.invoke(app, _mlp_args(tmp_path / "ref", "--epochs", "2"))
    assert ref.exit_code == 0, ref.output
    out = tmp_path / "run"
    original = safetensors.torch.save_file
    calls = {"state": 0}

    def full_disk(tensors: Any, filename: str, metadata: Any = None) -> None:
        if "state.safetensors" in filename:
            calls["state"] += 1
            if calls["state"] == 2:  # the end-of-epoch-2 state write
                Path(filename).write_bytes(b"\0" * 1000)  # what got out before the disk filled up
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), filename)
        original(tensors, filename, metadata=metadata)

    monkeypatch.setattr(safetensors.torch, "save_file", full_disk)
    res = runner.invoke(app, _mlp_args(out, "--epochs", "2"))
    monkeypatch.undo()
    assert res.exit_code == 1, res.output
    last_line = res.output.strip().splitlines()[-1]  # after the run's start line
    assert last_line.startswith("Error: No space left on device") and "state.safetensors" in last_line, res.output
    assert "Traceback" not in res.output
    assert load_state(out).counters.epoch == 1 and not list(out.glob(".*.tmp"))
    again = runner.invoke(app, _mlp_args(out, "--epochs", "2", "--resume", str(out)))
    assert again.exit_code == 0, again.output
    assert _same_weights(out / "last.safetensors", tmp_path / "ref" / "last.safetensors")


# -- unusable output folders -------------------------------------------------------------------------------
def _read_only_dir() -> Path | None:
    """A folder this process cannot create files in. chmod does not stop root, so as root use a
    read-only mount (/sys or /proc in containers) when one refuses us; None when there is none."""
    for candidate in (Path("/sys"), Path("/proc")):
        probe = candidate / "aecli-probe"
        try:
            probe.mkdir()
        except OSError as exc:
            if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOENT):
                return candidate
        else:
            probe.rmdir()
    return None


@pytest.fixture(scope="module")
def small_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    sys.path.insert(0, str(Path(__file__).parent))
    from conftest import tiny_model

    from aecli.checkpoint import save_model
    from aecli.data.spec import DataSpec

    torch.manual_seed(0)
    model = tiny_model(FAMILY, 32, 1)
    return save_model(tmp_path_factory.mktemp("ckpt") / "vae.safetensors", model,
                      DataSpec(32, 1, model.value_range, [], "test"))


def _out_cases(tmp_path: Path) -> dict[str, Path]:
    afile = tmp_path / "a-file"
    afile.write_text("x")
    cases = {"under a file": afile / "sub", "is a file": afile}
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o555)
        cases["read-only folder (chmod 555)"] = locked / "run"
    ro = _read_only_dir()
    if ro is not None:
        cases[f"read-only file system ({ro})"] = ro / "aecli-run"
    return cases


def test_unusable_train_output_is_refused_before_training(tmp_path: Path) -> None:
    from aecli.cli import app

    for what, out in _out_cases(tmp_path).items():
        start = time.perf_counter()
        res = runner.invoke(app, _mlp_args(out, "--epochs", "1"))
        text = res.output.strip()
        assert res.exit_code == 2, (what, res.exit_code, text)
        assert text.startswith("Error: ") and "\n" not in text and str(out.name) in text, (what, text)
        assert "training " not in text and time.perf_counter() - start < 10, what
    assert not list(tmp_path.rglob("*.safetensors"))


@pytest.mark.parametrize("command", ["reconstruct", "sample", "tsne", "evaluate --json-out"])
def test_unusable_output_of_other_commands(command: str, small_ckpt: Path, tmp_path: Path) -> None:
    from aecli.cli import app

    cases = _out_cases(tmp_path)
    for what, out in cases.items():
        target = {"reconstruct": out, "sample": out, "tsne": out.with_suffix(".png"),
                  "evaluate --json-out": out.with_suffix(".json")}[command]
        if what == "is a file" and command in ("tsne", "evaluate --json-out"):
            continue  # a file there is simply replaced: an output file name is expected
        args = {"reconstruct": ["reconstruct", small_ckpt, "--data", "shapes:4", "--out", target],
                "sample": ["sample", small_ckpt, "--n", "3", "--out", target],
                "tsne": ["tsne", small_ckpt, "--data", "shapes:12", "--split", "all", "--method", "pca", "--out",
                         target],
                "evaluate --json-out": ["evaluate", small_ckpt, "--data", "shapes:4", "--split", "all", "--metrics",
                                    "l1", "--json-out", target]}[command]
        res = runner.invoke(app, [str(a) for a in args] + ["--device", "cpu"])
        last = res.output.strip().splitlines()[-1] if res.output.strip() else ""
        assert res.exit_code == 2, (what, res.exit_code, res.output)  # bad input, refused before any work
        assert "Traceback" not in res.output and last.startswith("Error: "), (what, res.output)


def test_missing_parent_folders_are_created(small_ckpt: Path, tmp_path: Path) -> None:
    from aecli.cli import app

    grid = tmp_path / "new" / "deeper" / "grid.png"
    res = runner.invoke(app, ["sample", str(small_ckpt), "--n", "4", "--out", str(grid), "--device", "cpu"])
    assert res.exit_code == 0 and grid.exists(), res.output
    folder = tmp_path / "new2" / "recon"
    res = runner.invoke(app, ["reconstruct", str(small_ckpt), "--data", "shapes:3", "--out", str(folder),
                              "--device", "cpu"])
    assert res.exit_code == 0 and (folder / "comparison.png").exists(), res.output


# -- NaN/inf weights ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def nan_ckpt(small_ckpt: Path) -> Path:
    """The small checkpoint with NaN in one decoder weight and inf in one encoder weight."""
    from safetensors import safe_open

    tensors = load_file(str(small_ckpt))
    with safe_open(str(small_ckpt), framework="pt") as fh:
        meta = fh.metadata()
    def first_conv(prefix: str) -> str:  # the first 4-D weight of that half, whatever the trunk's layout
        return next(k for k, t in tensors.items() if k.startswith(prefix) and k.endswith("weight") and t.dim() == 4)

    tensors[first_conv("model.decoder.")][0, 0, 0, 0] = float("nan")
    tensors[first_conv("model.encoder.")][0, 0, 0, 0] = float("inf")
    path = small_ckpt.with_name("nan.safetensors")
    save_file(tensors, str(path), metadata=meta)
    return path


def test_nan_weights_load_and_commands_report_instead_of_crashing(nan_ckpt: Path, tmp_path: Path) -> None:
    """A checkpoint is a valid file even if its weights diverged: `info` shows it, `evaluate` runs and
    reports the non-finite figures (JSON null with a note), `reconstruct` runs and its PSNR says nan."""
    from aecli.cli import app

    assert runner.invoke(app, ["info", str(nan_ckpt)]).exit_code == 0
    report = tmp_path / "eval.json"
    res = runner.invoke(app, ["evaluate", str(nan_ckpt), "--data", "shapes:6", "--split", "all", "--metrics",
                              "l1,mse,psnr", "--device", "cpu", "--json-out", str(report)])
    assert res.exit_code == 0, res.output
    text = report.read_text()
    assert "NaN" not in text and "Infinity" not in text  # strict JSON
    assert "non-finite" in text, text
    res = runner.invoke(app, ["reconstruct", str(nan_ckpt), "--data", "shapes:3", "--out", str(tmp_path / "r"),
                              "--device", "cpu"])
    assert res.exit_code == 0 and "nan" in res.output.lower(), res.output


def test_resuming_from_nan_weights_stops_at_the_first_step(tmp_path: Path) -> None:
    """A resume state whose weights hold NaN: the first step's loss is NaN, so the run stops naming
    the step and the loss component, exit 1, and last.safetensors is left as it was."""
    from safetensors import safe_open

    from aecli.cli import app

    out = tmp_path / "run"
    assert runner.invoke(app, _mlp_args(out, "--epochs", "1")).exit_code == 0
    state = out / "state.safetensors"
    with safe_open(str(state), framework="pt") as fh:
        meta = fh.metadata()
    tensors = load_file(str(state))
    name = next(k for k in tensors if k.startswith("model.") and k.endswith("weight"))
    tensors[name][0] = float("nan")
    save_file(tensors, str(state), metadata=meta)
    last = (out / "last.safetensors").read_bytes()
    res = runner.invoke(app, _mlp_args(out, "--epochs", "2", "--resume", str(out)))
    assert res.exit_code == 1, res.output
    # 32 training images / batch 8: epoch 2 starts with step 5 (1-based, as in the logs), which meets the NaN.
    assert "non-finite loss at step 5 " in res.output and "recon" in res.output, res.output
    assert (out / "last.safetensors").read_bytes() == last


def test_weights_that_turn_nan_are_never_saved_as_the_last_good_checkpoint(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """An optimizer step that leaves NaN in the weights (the loss of that step was still finite) right
    before a checkpoint: the run must stop naming the step, and last.safetensors must hold finite
    weights from before it."""
    from aecli.checkpoint import load_model
    from aecli.errors import TrainingError
    from aecli.training import train
    from aecli.training.trainer import Trainer

    original = Trainer._update_ema

    def poison(self: Trainer) -> None:  # after step 4's optimizer update: the end of epoch 2
        original(self)
        if self.counters.step + 1 == 4:
            with torch.no_grad():
                next(self.model.parameters()).view(-1)[0] = float("nan")

    monkeypatch.setattr(Trainer, "_update_ema", poison)
    with pytest.raises(TrainingError, match=r"non-finite .*step 4\b"):
        train(train_config(tmp_path / "run", save_every_steps=0))
    ckpt = load_model(tmp_path / "run" / "last.safetensors")
    assert ckpt.header.training["steps"] == 2  # epoch 1's checkpoint, from before the NaN
    assert all(torch.isfinite(t).all() for t in ckpt.model.state_dict().values() if t.is_floating_point())


# -- a killed `sample` into thousands of files --------------------------------------------------------------
def test_kill_9_during_sample_into_a_folder_then_rerun(small_ckpt: Path, tmp_path: Path) -> None:
    from PIL import Image

    from aecli.cli import app

    n, out = 1200, tmp_path / "samples"
    args = ["sample", str(small_ckpt), "--n", str(n), "--out", str(out), "--batch-size", "50", "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "aecli", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=env)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and len(list(out.glob("sample_*.png"))) < 150:
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "sample finished before it could be killed"
    done_before = len(list(out.glob("sample_*.png")))
    assert 0 < done_before < n
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert f"{n - done_before} written, {done_before} already there" in res.output, res.output
    files = sorted(out.glob("*.png"))
    assert [p.name for p in files] == [f"sample_{i:06d}.png" for i in range(n)]  # no duplicates, none missing
    assert sorted(p.name for p in out.iterdir() if not p.name.endswith(".png")) == ["aecli-sample.json"]
    for p in files:
        with Image.open(p) as img:
            img.load()  # decodes: no half-written PNG under a final name
            assert img.size == (32, 32)
    # The files from before and after the kill are those of one uninterrupted run.
    ref = tmp_path / "ref"
    k = done_before + 50
    assert runner.invoke(app, ["sample", str(small_ckpt), "--n", str(k), "--out", str(ref), "--device", "cpu"]
                         ).exit_code == 0
    assert all((out / p.name).read_bytes() == p.read_bytes() for p in ref.glob("sample_*.png"))


# -- no code-executing loaders in the package ----------------------------------------------------------------
_SAFE_PICKLE_NAMES = {"UnpicklingError", "PicklingError", "PickleError"}  # exception classes only
_UNSAFE_MODULES = {"dill", "cloudpickle", "shelve", "marshal", "joblib", "_pickle", "cPickle"}


def unsafe_calls(source: str, filename: str = "<src>") -> list[str]:
    """Every use of a code-executing loader in ``source``: pickle functions, torch.load without
    weights_only=True, torch.hub.load / torch.jit.load, np.load(allow_pickle=True), yaml.load,
    eval/exec/compile, subprocess with shell=True, and the modules that wrap pickle."""
    found = []
    tree = ast.parse(source, filename)
    for node in ast.walk(tree):
        where = f"{filename}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) and node.module
                                                    else [])
            for name in names:
                if name.split(".")[0] in _UNSAFE_MODULES:
                    found.append(f"{where} imports {name}")
            if isinstance(node, ast.ImportFrom) and node.module == "pickle":
                found += [f"{where} from pickle import {a.name}" for a in node.names if a.name not in _SAFE_PICKLE_NAMES]
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "pickle" \
                and node.attr not in _SAFE_PICKLE_NAMES:
            found.append(f"{where} pickle.{node.attr}")
        elif isinstance(node, ast.Call):
            func = ast.unparse(node.func)
            kwargs = {k.arg: k.value for k in node.keywords}
            if func in ("eval", "exec", "compile", "__import__", "builtins.eval", "builtins.exec"):
                found.append(f"{where} {func}()")
            elif func.endswith("torch.load") or func == "load" and "weights_only" in kwargs:
                wo = kwargs.get("weights_only")
                if not (isinstance(wo, ast.Constant) and wo.value is True):
                    found.append(f"{where} {func}() without weights_only=True")
            elif func.endswith(("hub.load", "jit.load", "yaml.load", "yaml.unsafe_load")):
                found.append(f"{where} {func}()")
            elif func.endswith(("np.load", "numpy.load")) and isinstance(kwargs.get("allow_pickle"), ast.Constant) \
                    and kwargs["allow_pickle"].value is True:
                found.append(f"{where} {func}(allow_pickle=True)")
            elif func.startswith("subprocess.") and isinstance(kwargs.get("shell"), ast.Constant) \
                    and kwargs["shell"].value is True:
                found.append(f"{where} {func}(shell=True)")
    return found


def test_the_scanner_catches_each_unsafe_pattern() -> None:
    bad = """
import pickle, dill
from pickle import loads
import torch, numpy as np, yaml, subprocess
pickle.loads(b"")
torch.load("x")
torch.load("x", weights_only=False)
torch.hub.load("a", "b")
np.load("x.npy", allow_pickle=True)
yaml.load(s)
eval("1")
exec("x = 1")
subprocess.run("ls", shell=True)
"""
    assert len(unsafe_calls(bad)) == 11, unsafe_calls(bad)
    ok = """
import pickle, torch, numpy as np
try:
    torch.load("x", map_location="cpu", weights_only=True)
except pickle.UnpicklingError:
    pass
np.load("x.npy", allow_pickle=False)
model.eval()
"""
    assert unsafe_calls(ok) == []


def test_package_has_no_code_executing_loaders() -> None:
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 30
    found = [hit for f in files for hit in unsafe_calls(f.read_text(encoding="utf-8"), str(f.relative_to(PACKAGE)))]
    assert found == [], "\n".join(found)


if __name__ == "__main__" and sys.argv[1:2] == ["kill-driver"]:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # SIGKILLed children leave no core files
    kill_driver(Path(sys.argv[2]), json.loads(sys.argv[3]))
