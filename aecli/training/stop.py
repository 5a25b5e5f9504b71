"""Stopping a run cleanly: signals become a flag the loop checks at step boundaries, and a Slurm job
can put itself back in the queue (--requeue)."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from typing import Any, Callable

from aecli.errors import Interrupted

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)
SIGNALLED, OUT_OF_TIME = 2, 1  # stop votes across ranks (distributed.StopVote): a signal outranks the clock


class StopFlag:
    """SIGTERM/SIGUSR1 (Slurm --signal=USR1@120, preemption, scancel) and Ctrl-C only set a flag: the
    current step finishes, then state is saved and we exit with EXIT_INTERRUPTED. A second Ctrl-C
    aborts at once (KeyboardInterrupt), for a user who does not want to wait for the step. Before
    training starts (``training`` False) there is nothing to save and set-up may be blocked in a system
    call a flag never interrupts (a stalled mount, a FIFO), so the signal stops the process at once."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self.training = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "StopFlag":
        if threading.current_thread() is threading.main_thread():  # Python allows handlers only there
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if signum == signal.SIGINT and self.signal is not None:
            raise KeyboardInterrupt
        self.signal = signum
        if not self.training:
            raise Interrupted(f"stopped by {signal.Signals(signum).name} before training started; nothing "
                              "was trained — run the same command again")

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def requeue(say: Callable[[str], None]) -> None:
    """Put the Slurm job back in the queue; it restarts with the same script (use --resume auto)."""
    job = os.environ.get("SLURM_JOB_ID")
    if not job:
        say("--requeue: not inside a Slurm job (no SLURM_JOB_ID); not requeued")
        return
    try:
        done = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=60)
        ok, why = done.returncode == 0, (done.stderr or done.stdout).strip()
    except (OSError, subprocess.TimeoutExpired) as exc:
        ok, why = False, str(exc)
    say(f"requeued Slurm job {job}" if ok else f"scontrol requeue {job} failed: {why}; "
        "resubmit the job script (it resumes with --resume auto)")
