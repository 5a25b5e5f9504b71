"""The training engine behind `aecli train`."""

from aecli.training.config import TrainConfig
from aecli.training.trainer import RunResult, train

__all__ = ["RunResult", "TrainConfig", "train"]
