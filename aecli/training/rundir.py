"""The run folder's layout: every file and folder `aecli train` writes there, named once.

The trainer, the logs, the resume state, the run-folder rules and `aecli report` all ask a
:class:`RunDir` for their paths, so a renamed file cannot leave one of them looking in the old place.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from aecli.atomic import remove_stale_temps, temp_target
from aecli.locking import LOCK_FILE

PERIODIC = re.compile(r"^step\d{8}\.safetensors$")  # --save-every-steps checkpoints (aecli's own only)


@dataclass(frozen=True)
class RunDir:
    path: Path

    LAST = "last.safetensors"
    BEST = "best.safetensors"
    STATE = "state.safetensors"
    CONFIG = "config.json"
    COMMAND = "command.txt"
    METRICS_JSONL = "metrics.jsonl"
    METRICS_CSV = "metrics.csv"
    LOSS_CURVES = "loss_curves.png"
    GRIDS = "grids"
    TENSORBOARD = "tensorboard"
    CSV = "csv"  # --tracker csv
    MLRUNS = "mlruns"  # --tracker mlflow's local file store
    # Files aecli writes at the top of a run folder (beside its folders): only these are pruned or cleaned,
    # and a folder holding anything else is not this run's.
    FILES = (LAST, BEST, STATE, CONFIG, COMMAND, METRICS_JSONL, METRICS_CSV, LOSS_CURVES)
    FOLDERS = (GRIDS, TENSORBOARD)

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    def __str__(self) -> str:
        return str(self.path)

    @property
    def name(self) -> str:
        return self.path.name

    def file(self, name: str) -> Path:
        return self.path / name

    @property
    def last(self) -> Path:
        return self.path / self.LAST

    @property
    def best(self) -> Path:
        return self.path / self.BEST

    @property
    def state(self) -> Path:
        return self.path / self.STATE

    @property
    def config(self) -> Path:
        return self.path / self.CONFIG

    @property
    def command(self) -> Path:
        return self.path / self.COMMAND

    @property
    def metrics_jsonl(self) -> Path:
        return self.path / self.METRICS_JSONL

    @property
    def metrics_csv(self) -> Path:
        return self.path / self.METRICS_CSV

    @property
    def loss_curves(self) -> Path:
        return self.path / self.LOSS_CURVES

    @property
    def grids(self) -> Path:
        return self.path / self.GRIDS

    @property
    def tensorboard(self) -> Path:
        return self.path / self.TENSORBOARD

    def periodic(self, step: int) -> Path:
        return self.path / f"step{step:08d}.safetensors"

    def periodic_checkpoints(self) -> list[Path]:
        """aecli's own stepNNNNNNNN.safetensors, oldest first (a user's step-before-x.safetensors is not one)."""
        return sorted(p for p in self.path.glob("step*.safetensors") if PERIODIC.match(p.name))

    def grid(self, kind: str, epoch: int) -> Path:
        """grids/<kind>_eNNN.png for the 1-based ``epoch``."""
        return self.grids / f"{kind}_e{epoch:03d}.png"

    def latest_grid(self, kind: str) -> Path | None:
        files = sorted(self.grids.glob(f"{kind}_e*.png")) if self.grids.is_dir() else []
        return files[-1] if files else None

    def checkpoint(self) -> Path:
        """The checkpoint that represents the run: best, else last."""
        return self.best if self.best.exists() else self.last

    def evaluation_files(self) -> list[Path]:
        """`aecli evaluate --json` outputs saved in the run folder (evaluation*.json)."""
        return sorted(self.path.glob("evaluation*.json"))

    @classmethod
    def is_run_file(cls, name: str) -> bool:
        return name in cls.FILES or bool(PERIODIC.match(name))

    @classmethod
    def owns_temp_target(cls, target: str) -> bool:
        """Whether a killed atomic write of ``target`` was one of the run's files (or its lock)."""
        return cls.is_run_file(target) or target.startswith(LOCK_FILE[1:])

    @classmethod
    def is_temp_file(cls, name: str) -> bool:
        """A temp file a killed atomic write of one of the run's files left behind."""
        target = temp_target(name)
        return target is not None and cls.owns_temp_target(target)

    def remove_stale_temp_files(self) -> None:
        """Temp files are never read; only those of aecli's own run files are removed."""
        remove_stale_temps(self.path, self.owns_temp_target)
