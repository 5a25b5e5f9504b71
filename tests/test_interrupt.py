"""Preemption safety: SIGTERM/SIGUSR1 at any point → exit 75 with a resume state, and the resumed run
ends bit-identical to an uninterrupted one; kill -9 during checkpoint writes; --keep; batch logs.

Real `aecli train` subprocesses get real signals, timed by reading their log lines live. The exact
points (epoch boundary, first and last step) are hit deterministically in-process, where the signal
is sent from inside a chosen step.
"""

from __future__ import annotations

import os
import queue
import random
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from conftest import tiny_kwargs
from safetensors import safe_open
from safetensors.torch import load_file

from aecli.checkpoint import load_model
from aecli.errors import EXIT_INTERRUPTED, Interrupted
from aecli.training import TrainConfig, train
from aecli.training.state import load_state
from aecli.training.trainer import Trainer

FAMILY = "conv-vae"  # draws VAE noise from the global RNG every step: resume must restore it exactly
STEPS_PER_EPOCH, EPOCHS = 25, 2  # 1617 digits training images // batch 64
TIMESTAMP = re.compile(r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\] ")
LAUNCH_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def model_options(family: str = FAMILY) -> list[str]:
    opts = tiny_kwargs(family)
    args = ["--image-size", str(opts.pop("image_size")), "--channels", str(opts.pop("channels"))]
    for key, value in opts.items():
        text = ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
        args += ["-m", f"{key}={text}"]
    return args


def train_args(*extra: str, family: str = FAMILY, batch: int = 64) -> list[str]:
    return ["train", family, *model_options(family), "--data", "digits", "--epochs", str(EPOCHS),
            "--batch-size", str(batch), "--device", "cpu", "--workers", "1", "--grid-columns", "2",
            "--seed", "5", *extra]


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without launcher variables (a test run under Slurm must not leak them)."""
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARS and not k.startswith("SLURM_")}
    env.pop("PYTHONUNBUFFERED", None)  # the tests check aecli's own per-line flushing
    env.update(OMP_NUM_THREADS="1", **extra)  # one thread: 2 spinning OpenMP threads crawl on a shared CPU
    return env


class Live:
    """An `aecli` subprocess whose stdout lines are read as they are written."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "aecli", *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=env or clean_env())
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.stdout: list[str] = []
        self.stderr = ""
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def wait_for(self, pattern: str, timeout: float = 60) -> str:
        """The first new line matching ``pattern``; asserts it came while the process still ran."""
        deadline = time.time() + timeout
        while True:
            line = self.lines.get(timeout=max(0.01, deadline - time.time()))
            if line is None:
                raise AssertionError(f"exited before {pattern!r}: {''.join(self.stdout)}{self.stderr_text()}")
            self.stdout.append(line)
            if re.search(pattern, line):
                return line

    def stderr_text(self) -> str:
        assert self.proc.stderr is not None
        return self.proc.stderr.read() if self.proc.poll() is not None else ""

    def finish(self, timeout: float = 120) -> int:
        rc = self.proc.wait(timeout=timeout)
        while (line := self.lines.get(timeout=10)) is not None:
            self.stdout.append(line)
        self.stderr = self.stderr_text()
        return rc


def run_aecli(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "aecli", *args], capture_output=True, text=True,
                          env=env or clean_env(), timeout=180)


def assert_same_weights(a: Path, b: Path) -> None:
    ta, tb = load_file(str(a)), load_file(str(b))
    assert ta.keys() == tb.keys()
    for k in ta:
        assert torch.equal(ta[k], tb[k]), f"{k} differs"


def state_step(run_dir: Path) -> tuple[int, int, int]:
    c = load_state(run_dir).counters
    return c.step, c.epoch, c.batch


def epoch_rows(run_dir: Path) -> list[str]:
    """The epoch lines of metrics.jsonl without wall-clock fields (they differ between runs)."""
    import json

    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [json.dumps({k: v for k, v in r.items() if k != "elapsed_s"}, sort_keys=True)
            for r in rows if r["kind"] == "epoch"]


@pytest.fixture(scope="module", autouse=True)
def _single_thread(one_thread: None) -> None:
    """Every test and fixture of this module runs on one torch thread (conftest.one_thread)."""


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted subprocess run every interrupted one must equal."""
    out = tmp_path_factory.mktemp("ref") / "run"
    done = run_aecli(train_args("--out", str(out), "--log-every", "1000"))
    assert done.returncode == 0, done.stderr
    return out


# -- real signals to real processes --------------------------------------------------------------
def test_sigterm_and_sigusr1_exit_75_and_the_resumed_run_is_bit_identical(reference: Path, tmp_path: Path) -> None:
    """One job script line (`--resume auto --out DIR`) submitted, preempted, requeued, preempted again
    (Slurm's --signal=USR1@120), then finished with an explicit `--resume DIR`."""
    out = tmp_path / "run"
    auto = train_args("--resume", "auto", "--out", str(out), "--log-every", "1")
    resumed_from = 0
    for sig, after_step in ((signal.SIGTERM, 3), (signal.SIGUSR1, 33)):  # mid epoch 1, mid epoch 2
        live = Live(auto)
        first = live.wait_for(r"step \d+/50 ")
        # --resume auto: a fresh start on a folder that does not exist yet, then a continuation.
        assert f"step {resumed_from + 1}/50 " in first
        live.wait_for(rf"step {after_step}/50 ")  # read while the process runs: lines are flushed live
        live.proc.send_signal(sig)
        assert live.finish() == EXIT_INTERRUPTED, live.stderr
        assert f"stopped by {sig.name}" in live.stderr and "Traceback" not in live.stderr
        step, epoch, batch = state_step(out)
        assert after_step <= step < EPOCHS * STEPS_PER_EPOCH
        assert (epoch, batch) in (divmod(step, STEPS_PER_EPOCH), (step // STEPS_PER_EPOCH - 1, STEPS_PER_EPOCH))
        load_model(out / "last.safetensors")  # the interrupted run's checkpoint is usable as it is
        # Batch-log behaviour (stdout is a pipe here): timestamped lines, no redraws.
        text = "".join(live.stdout) + live.stderr
        assert "\r" not in text and "\x1b" not in text
        assert all(TIMESTAMP.match(line) for line in live.stdout), live.stdout[:3]
        resumed_from = step

    done = run_aecli(train_args("--resume", str(out), "--log-every", "1"))
    assert done.returncode == 0, done.stderr
    assert f"step {resumed_from + 1}/50 " in done.stdout.splitlines()[1]
    assert_same_weights(out / "last.safetensors", reference / "last.safetensors")
    assert_same_weights(out / "best.safetensors", reference / "best.safetensors")
    assert epoch_rows(out) == epoch_rows(reference)  # epoch means too, across mid-epoch stops


def test_kill_9_during_checkpoint_writes_leaves_loadable_files(reference: Path, tmp_path: Path) -> None:
    """--save-every-steps 1 writes three files per step; kill -9 at random moments, resume, repeat."""
    out = tmp_path / "run"
    args = train_args("--resume", "auto", "--out", str(out), "--save-every-steps", "1", "--keep", "3",
                      "--log-every", "1")
    rng = random.Random(1)
    killed_at = []
    for _ in range(2):
        live = Live(args)
        live.wait_for(r"step \d+/50 ")
        live.wait_for(r"step \d+/50 ")  # the previous step's three files are written by now
        time.sleep(rng.uniform(0.0, 0.4))
        live.proc.kill()
        live.finish()
        killed_at.append(state_step(out)[0])
        # What a kill leaves must load; stray temp files are never named like checkpoints.
        load_model(out / "last.safetensors")
        with safe_open(str(out / "state.safetensors"), "pt"):
            pass
        assert all(p.name.startswith(".") and p.name.endswith(".tmp")
                   for p in out.iterdir() if "safetensors" in p.name and not p.name.endswith(".safetensors"))
        for p in out.glob("step*.safetensors"):
            load_model(p)
    done = run_aecli(args)
    assert done.returncode == 0, done.stderr
    assert killed_at == sorted(killed_at) and killed_at[-1] > 0, killed_at
    assert not list(out.glob(".*.tmp")), "stale temp files of killed writes are cleaned on resume"
    assert_same_weights(out / "last.safetensors", reference / "last.safetensors")
    # --keep 3: only the last three periodic checkpoints remain, each the weights of its step.
    kept = sorted(p.name for p in out.glob("step*.safetensors"))
    assert kept == [f"step{s:08d}.safetensors" for s in (48, 49, 50)]
    assert_same_weights(out / "step00000050.safetensors", reference / "last.safetensors")
    assert load_model(out / "step00000049.safetensors").header.training["steps"] == 49


# -- exact points, in-process --------------------------------------------------------------------
def _cfg(out: Path, **kw: object) -> TrainConfig:
    model = tiny_kwargs(FAMILY)
    size, channels = model.pop("image_size"), model.pop("channels")
    base = dict(family=FAMILY, model=model, data="digits", image_size=size, channels=channels, epochs=EPOCHS,
                batch_size=64, device="cpu", workers=1, grid_size=2, seed=5, out=str(out), log_every=1000)
    base.update(kw)
    return TrainConfig(**base)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def inprocess_reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ref_inproc") / "run"
    train(_cfg(out))
    return out


@pytest.mark.parametrize("sig, at_step", [
    (signal.SIGTERM, 1),  # the very first step
    (signal.SIGUSR1, STEPS_PER_EPOCH),  # the last step of epoch 1: resume starts with its end-of-epoch work
    (signal.SIGTERM, EPOCHS * STEPS_PER_EPOCH),  # the last step of the run
])
def test_signal_at_exact_step_resumes_exactly(sig: signal.Signals, at_step: int, inprocess_reference: Path,
                                              tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "run"
    original = Trainer._update_ema

    def signal_inside_step(self: Trainer) -> None:  # runs inside step number counters.step + 1
        original(self)
        if self.counters.step + 1 == at_step:
            os.kill(os.getpid(), sig)

    monkeypatch.setattr(Trainer, "_update_ema", signal_inside_step)
    with pytest.raises(Interrupted, match=f"stopped by {sig.name} at step {at_step};"):
        train(_cfg(out, save_every_steps=10))
    monkeypatch.undo()
    assert state_step(out)[0] == at_step
    assert signal.getsignal(sig) is signal.SIG_DFL  # handlers are put back
    result = train(_cfg(out, save_every_steps=10), resume=str(out))
    assert (result.steps, result.epochs) == (EPOCHS * STEPS_PER_EPOCH, EPOCHS)
    assert_same_weights(out / "last.safetensors", inprocess_reference / "last.safetensors")
    # --save-every-steps 10 with --keep 0 (all kept), across the interrupt: steps 10..50.
    assert sorted(p.name for p in out.glob("step*.safetensors")) == [f"step{s:08d}.safetensors"
                                                                     for s in range(10, 51, 10)]
    assert_same_weights(out / "step00000050.safetensors", inprocess_reference / "last.safetensors")
    assert epoch_rows(out) == epoch_rows(inprocess_reference)


def test_resume_auto_starts_fresh_on_an_empty_folder_and_continues_a_run(inprocess_reference: Path,
                                                                         tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()  # exists and is empty: a fresh start, not an error
    first = train(_cfg(out, epochs=1), resume="auto")
    assert first.steps == STEPS_PER_EPOCH
    second = train(_cfg(out), resume="auto")  # same line, more epochs: continues from the state
    assert second.steps == EPOCHS * STEPS_PER_EPOCH
    assert_same_weights(out / "last.safetensors", inprocess_reference / "last.safetensors")


def test_keep_prunes_periodic_checkpoints(tmp_path: Path) -> None:
    out = tmp_path / "run"
    train(_cfg(out, epochs=1, save_every_steps=4, keep=2))
    assert sorted(p.name for p in out.glob("step*.safetensors")) == ["step00000020.safetensors",
                                                                     "step00000024.safetensors"]
    assert load_model(out / "step00000024.safetensors").header.training["steps"] == 24
    assert load_model(out / "step00000020.safetensors").header.training["steps"] == 20
