"""The training engine behind `aecli train`.

``train`` and ``RunResult`` are imported on first use: `aecli train --help` reads the options declared
in aecli.training.config without loading torch."""

from __future__ import annotations

from typing import Any

from aecli.training.config import TrainConfig

__all__ = ["RunResult", "TrainConfig", "train"]


def __getattr__(name: str) -> Any:
    if name in ("RunResult", "train"):
        from aecli.training import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module 'aecli.training' has no attribute {name!r}")
