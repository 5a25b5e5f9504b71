"""Experiment trackers (`aecli train --tracker tensorboard|wandb|mlflow|csv`, repeatable).

Every tracker receives the same things, under the same names: the scalars the run logs (tag
``<loss>/<split>`` with split train, val or train_step; ``lr`` and ``images_per_s`` alone) at the
global step, the per-epoch image grids, the resolved config as hyperparameters, and the final
losses. None is a dependency of aecli: a missing package is a one-line error naming the extra to
install. Nothing leaves the machine unless asked: W&B runs offline (``WANDB_MODE`` overrides it) and
MLflow writes a local file store in the run folder (``MLFLOW_TRACKING_URI`` overrides it).
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

from aecli.errors import UsageError
from aecli.training.rundir import RunDir

TRACKERS = ("tensorboard", "wandb", "mlflow", "csv")
_EXCLUDED = ("epoch", "step")  # row bookkeeping, not scalars
_UNSPLIT = ("lr", "images_per_s")  # one series, whatever the split


def scalar_tags(split: str, values: dict[str, Any]) -> dict[str, float]:
    """The tracker name of each loggable value of a metrics row: ``recon/val``, ``lr``, …"""
    return {(k if k in _UNSPLIT else f"{k}/{split}"): float(v) for k, v in values.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in _EXCLUDED}


def _flat(hparams: dict[str, Any]) -> dict[str, Any]:
    """Hyperparameters as scalars/strings (lists and tables become their JSON text)."""
    return {k: v if isinstance(v, (int, float, str, bool)) else json.dumps(v) for k, v in hparams.items()}


def _need(package: str, tracker: str, extra: str) -> Any:
    import importlib

    try:
        return importlib.import_module(package)
    except ImportError:
        raise UsageError(f"--tracker {tracker} needs the {extra} package: pip install 'aecli[{extra}]'") from None


_PACKAGES = {"tensorboard": ("torch.utils.tensorboard", "tensorboard"), "wandb": ("wandb", "wandb"),
             "mlflow": ("mlflow", "mlflow")}


class CsvTracker:
    """RUN_DIR/csv/scalars.csv (step, tag, value) and images.csv (step, tag, path): plain files any
    tool reads, appended and flushed as the run goes (a resumed run continues them)."""

    def __init__(self, run_dir: Path, hparams: dict[str, Any]) -> None:
        self.dir = RunDir(run_dir).file(RunDir.CSV)
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "hparams.json").write_text(json.dumps(hparams, indent=2) + "\n", encoding="utf-8")

    def _append(self, name: str, header: list[str], rows: list[list[Any]]) -> None:
        path = self.dir / name
        new = not path.exists()
        with open(path, "a", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            if new:
                writer.writerow(header)
            writer.writerows(rows)

    def scalars(self, split: str, values: dict[str, Any], step: int) -> None:
        self._append("scalars.csv", ["step", "tag", "value"],
                     [[step, tag, repr(v)] for tag, v in scalar_tags(split, values).items()])

    def image(self, tag: str, png_path: Path, step: int) -> None:
        self._append("images.csv", ["step", "tag", "path"], [[step, tag, str(png_path)]])

    def close(self, final: dict[str, float]) -> None:
        (self.dir / "final.json").write_text(json.dumps(final, indent=2) + "\n", encoding="utf-8")


class WandbTracker:
    """Weights & Biases, offline by default: files in RUN_DIR/wandb, `wandb sync` uploads them later."""

    def __init__(self, run_dir: Path, hparams: dict[str, Any]) -> None:
        wandb = _need("wandb", "wandb", "wandb")
        self.wandb = wandb
        # No console capture (batch logs stay ours), no code or git snapshot, no system-stats sampler.
        settings = wandb.Settings(console="off", save_code=False, disable_git=True, x_disable_stats=True)
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "aecli"), name=run_dir.name,
                              dir=str(run_dir), config=hparams, mode=os.environ.get("WANDB_MODE", "offline"),
                              reinit="create_new", settings=settings)

    def scalars(self, split: str, values: dict[str, Any], step: int) -> None:
        self.run.log(scalar_tags(split, values), step=step)

    def image(self, tag: str, png_path: Path, step: int) -> None:
        # Under grids/: W&B nests keys at "/", so an image "recon" would collide with "recon/train".
        self.run.log({f"grids/{tag}": self.wandb.Image(str(png_path))}, step=step)

    def close(self, final: dict[str, float]) -> None:
        self.run.summary.update({k: v for k, v in final.items() if isinstance(v, (int, float))})
        self.run.finish()


class MlflowTracker:
    """MLflow through its client: a local file store RUN_DIR/mlruns unless MLFLOW_TRACKING_URI is set;
    scalars as metrics, grids as artifacts under grids/, the config as parameters."""

    def __init__(self, run_dir: Path, hparams: dict[str, Any]) -> None:
        _need("mlflow", "mlflow", "mlflow")
        from mlflow.tracking import MlflowClient

        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            # MLflow 3 keeps its file store in "maintenance mode" behind this switch; a database backend
            # would need SQLAlchemy and a server-side migration, too much for a run folder.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            uri = RunDir(run_dir).file(RunDir.MLRUNS).resolve().as_uri()
        self.client = MlflowClient(tracking_uri=uri)
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "aecli")
        exp = self.client.get_experiment_by_name(name)
        exp_id = exp.experiment_id if exp is not None else self.client.create_experiment(name)
        self.run_id = self.client.create_run(exp_id, run_name=run_dir.name).info.run_id
        for k, v in _flat(hparams).items():
            self.client.log_param(self.run_id, k, str(v)[:6000])  # MLflow's limit on a parameter value

    def scalars(self, split: str, values: dict[str, Any], step: int) -> None:
        for tag, v in scalar_tags(split, values).items():
            self.client.log_metric(self.run_id, tag, v, step=step)

    def image(self, tag: str, png_path: Path, step: int) -> None:
        self.client.log_artifact(self.run_id, str(png_path), artifact_path=f"grids/{tag}")

    def close(self, final: dict[str, float]) -> None:
        for k, v in final.items():
            if isinstance(v, (int, float)):
                self.client.log_metric(self.run_id, f"final/{k}", float(v))
        self.client.set_terminated(self.run_id)


class Trackers:
    """Fans every call out to the chosen trackers (the trainer holds one of these)."""

    def __init__(self, trackers: list[Any]) -> None:
        self.trackers = trackers

    def scalars(self, split: str, values: dict[str, Any], step: int) -> None:
        for t in self.trackers:
            t.scalars(split, values, step)

    def image(self, tag: str, png_path: Path, step: int) -> None:
        for t in self.trackers:
            t.image(tag, png_path, step)

    def close(self, final: dict[str, float]) -> None:
        for t in self.trackers:
            t.close(final)


def check_names(names: list[str] | tuple[str, ...]) -> None:
    for name in names:
        if name not in TRACKERS:
            raise UsageError(f"--tracker must be one of {', '.join(TRACKERS)}, got {name!r}")


def open_trackers(run_dir: Path, hparams: dict[str, Any], names: list[str] | tuple[str, ...],
                  tensorboard: bool = False) -> Trackers | None:
    """The trackers ``names`` asks for (``tensorboard``: the old --tensorboard flag), or None."""
    from aecli.training.logs import TensorBoardLog

    check_names(names)
    wanted = list(dict.fromkeys([*names, *(["tensorboard"] if tensorboard else [])]))
    if not wanted:
        return None
    for name in wanted:  # every package first: a missing one fails before any run is opened
        if name in _PACKAGES:
            _need(_PACKAGES[name][0], name, _PACKAGES[name][1])
    kinds = {"tensorboard": TensorBoardLog, "wandb": WandbTracker, "mlflow": MlflowTracker, "csv": CsvTracker}
    return Trackers([kinds[name](run_dir, hparams) for name in wanted])
