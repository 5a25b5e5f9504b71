"""Learning-rate schedules. step/cosine are pure functions of the step and the planned total; plateau (seed
001: ReduceLROnPlateau, factor 0.5, patience 10) keeps a tiny JSON-able state.

With a deadline (--max-time), the total is re-estimated every REPLAN_EVERY steps as the steps that still fit
before it at the rate this process measured (never beyond the epochs' plan), so a time-stopped run ends
with the cosine at zero instead of at a high learning rate. The estimate is saved with the state: a resumed
run continues from the recorded total until it has measured its own rate, so the learning rate at every
step is a function of recorded state."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

REPLAN_EVERY = 10  # steps between re-estimates of the total under a deadline (and the steps measured first)


@dataclass
class LRSchedule:
    kind: str  # none | step | cosine | plateau
    base_lr: float
    total_steps: int
    steps_per_epoch: int
    warmup_steps: int = 0
    step_size: int = 10  # epochs
    gamma: float = 0.5
    patience: int = 10
    deadline: float | None = None  # time.time() at which --max-time stops the run
    # the epochs' plan (total_steps may shrink below it to fit the deadline)
    planned_steps: int = field(default=0, init=False)
    replanned: bool = False  # total_steps is a deadline estimate (saved with the state)
    _clock: tuple[int, float] | None = field(default=None, init=False, repr=False)  # (step, time) this process began
    # plateau state
    best: float = math.inf
    bad_epochs: int = 0
    factor: float = 1.0

    def __post_init__(self) -> None:
        self.planned_steps = self.total_steps

    def observe(self, step: int, now: float | None = None) -> None:
        """Call before each step: under a deadline, re-estimate total_steps from this process's step rate."""
        if self.deadline is None:
            return
        now = time.time() if now is None else now
        if self._clock is None:
            self._clock = (step, now)
            return
        done = step - self._clock[0]
        if done < REPLAN_EVERY or step % REPLAN_EVERY:
            return
        per_step = (now - self._clock[1]) / done  # validation and checkpoint time included
        self.total_steps = min(self.planned_steps, step + max(0, int((self.deadline - now) / per_step)))
        self.replanned = True

    def lr(self, step: int) -> float:
        """Learning rate for optimizer step ``step`` (0-based)."""
        warm = min(1.0, (step + 1) / self.warmup_steps) if self.warmup_steps else 1.0
        if self.kind == "step":
            return self.base_lr * warm * self.gamma ** (step // max(1, self.step_size * self.steps_per_epoch))
        if self.kind == "cosine":
            span = max(1, self.total_steps - self.warmup_steps)
            progress = min(1.0, max(0, step - self.warmup_steps) / span)
            return self.base_lr * warm * 0.5 * (1 + math.cos(math.pi * progress))
        return self.base_lr * warm * self.factor

    def end_epoch(self, metric: float) -> None:
        """Plateau: halve (gamma) after ``patience`` epochs without improvement, like torch's
        ReduceLROnPlateau(mode='min', threshold=1e-4 relative)."""
        if self.kind != "plateau":
            return
        if metric < self.best * (1 - 1e-4):
            self.best, self.bad_epochs = metric, 0
        else:
            self.bad_epochs += 1
            if self.bad_epochs > self.patience:
                self.factor *= self.gamma
                self.bad_epochs = 0

    def state(self) -> dict[str, Any]:
        return {"best": self.best if math.isfinite(self.best) else None, "bad_epochs": self.bad_epochs,
                "factor": self.factor, "deadline_total_steps": self.total_steps if self.replanned else None}

    def load_state(self, state: dict[str, Any]) -> None:
        self.best = math.inf if state.get("best") is None else float(state["best"])
        self.bad_epochs = int(state.get("bad_epochs", 0))
        self.factor = float(state.get("factor", 1.0))
        if state.get("deadline_total_steps") is not None:  # a --max-time run's estimate, within today's plan
            self.total_steps = min(self.planned_steps, int(state["deadline_total_steps"]))
            self.replanned = True
