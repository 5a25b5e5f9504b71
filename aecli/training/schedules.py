"""Learning-rate schedules. step/cosine are pure functions of the step (nothing to save for resume);
plateau (seed 001: ReduceLROnPlateau, factor 0.5, patience 10) keeps a tiny JSON-able state."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


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
    # plateau state
    best: float = math.inf
    bad_epochs: int = 0
    factor: float = 1.0

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
                "factor": self.factor}

    def load_state(self, state: dict[str, Any]) -> None:
        self.best = math.inf if state.get("best") is None else float(state["best"])
        self.bad_epochs = int(state.get("bad_epochs", 0))
        self.factor = float(state.get("factor", 1.0))
