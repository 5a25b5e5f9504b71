"""Read what a run folder holds: config, final losses, architecture, grids, evaluation figures."""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from aecli.errors import AecliError, UsageError
from aecli.training.rundir import RunDir

# Config keys that describe a run in the hyperparameter table, in this order.
HYPER_KEYS = ("epochs", "batch_size", "lr", "optimizer", "betas", "weight_decay", "scheduler", "recon",
              "reduction", "beta", "kl_warmup_steps", "kl_cycles", "free_bits", "lpips", "lpips_net", "adv",
              "ema", "precision", "seed", "data", "image_size", "channels", "val_count", "val_fraction")
# Keys that never count as "swept" (they differ between any two runs).
_NOT_SWEPT = {"out", "command_line", "log_every", "workers", "device", "requeue", "keep", "save_every_steps",
              "cache", "data_root", "grid_size", "tensorboard", "trackers"}


@dataclass
class RunSummary:
    name: str
    path: Path
    family: str
    config: dict[str, Any]
    architecture: dict[str, Any]
    final: dict[str, float]  # final train/val losses from the last epoch rows
    evaluation: dict[str, Any] = field(default_factory=dict)  # metric -> value (from `aecli evaluate --json-out`)
    images: dict[str, Path] = field(default_factory=dict)  # "loss curves" / "reconstructions" / "samples"


def _last_epoch_losses(run: RunDir) -> dict[str, float]:
    path = run.metrics_jsonl
    final: dict[str, float] = {}
    if not path.exists():
        return final
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if not isinstance(row, dict) or row.get("kind") != "epoch":
            continue
        for k, v in row.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("epoch", "step", "elapsed_s", "images", "lr"):
                final[f"{row.get('split', 'train')}_{k}"] = float(v)
    return final


def _architecture(ckpt: Path) -> dict[str, Any]:
    from aecli.checkpoint import load_model

    loaded = load_model(ckpt, "cpu")
    model, cfg = loaded.model, loaded.header.config
    arch = {"parameters": loaded.header.parameter_count, "latent shape": "×".join(map(str, model.latent_shape)),
            "image": f"{loaded.data.channels}×{loaded.data.image_size}×{loaded.data.image_size}"}
    for key in ("norm", "activation", "widths", "base_channels", "latent", "output_activation", "flows", "heads"):
        if key in cfg:
            arch[key] = cfg[key]
    return arch


def _evaluations(run: RunDir, extra: list[Path]) -> dict[str, Any]:
    """Figures from `aecli evaluate --json-out` files in the run folder (evaluation*.json) or given with --eval;
    a row belongs to this run when its checkpoint lies in the run folder (best preferred over last)."""
    found: dict[str, dict[str, Any]] = {}
    for path in run.evaluation_files() + extra:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = None
        rows = data.get("rows") if isinstance(data, dict) else None
        if not isinstance(rows, list):
            problem = f"{path} is not readable JSON from `aecli evaluate --json-out` (an object with \"rows\")"
            if path in extra:  # named on the command line: the user's mistake to fix, not to skip
                raise UsageError(f"--eval {problem}; give a file written by `aecli evaluate --json-out`")
            warnings.warn(f"{problem}; its figures are left out", stacklevel=2)
            continue
        for row in rows:
            if not isinstance(row, dict) or not isinstance(row.get("name"), str) \
                    or not isinstance(row.get("values"), dict):
                continue
            ckpt = Path(row["name"])
            if ckpt.parent.resolve() == run.path.resolve():
                found[ckpt.name] = {str(k): v for k, v in row["values"].items()
                                    if isinstance(v, (int, float, str)) and not isinstance(v, bool)}
    return found.get(RunDir.BEST) or found.get(RunDir.LAST) or next(iter(found.values()), {})


def _read_config(path: Path) -> dict[str, Any] | None:
    """A run's config.json, or None (with a warning naming it) when it is not a usable one."""
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        problem = f"is not readable JSON ({type(exc).__name__})"
    else:
        if not isinstance(config, dict):
            problem = "is not a JSON object"
        elif not isinstance(config.get("family"), str):
            problem = "names no model family (\"family\")"
        elif not isinstance(config.get("model", {}), dict):
            problem = "has a \"model\" entry that is not an object"
        else:
            return config
    warnings.warn(f"{path} {problem}; that run is left out of the report", stacklevel=3)
    return None


def collect_runs(run_dirs: list[Path], eval_files: list[Path] | None = None,
                 note: Callable[[str], None] = lambda s: None) -> list[RunSummary]:
    """Summaries of the run folders; a path that holds no run (`report runs/*` meets other folders and
    files) is skipped with a ``note``, a run whose config or checkpoint is damaged is left out with a
    warning naming the file, and only no run at all is an error."""
    runs, damaged = [], 0
    for path in run_dirs:
        run = RunDir(path)
        config_path, ckpt = run.config, run.checkpoint()
        if not config_path.is_file() or not ckpt.is_file():
            why = f"no {run.CONFIG}" if not config_path.is_file() else \
                f"no checkpoint yet ({run.BEST}/{run.LAST})"
            note(f"skipped {run}: not an aecli run folder ({why})")
            continue
        config = _read_config(config_path)
        if config is None:
            damaged += 1
            continue
        try:
            architecture = _architecture(ckpt)
        except AecliError as exc:
            warnings.warn(f"{ckpt} cannot be read ({exc}); that run is left out of the report", stacklevel=2)
            damaged += 1
            continue
        images = {}
        if run.loss_curves.exists():
            images["loss curves"] = run.loss_curves
        for label, kind in (("reconstructions", "recon"), ("samples", "samples")):
            grid = run.latest_grid(kind)
            if grid is not None:
                images[label] = grid
        runs.append(RunSummary(name=run.name, path=run.path, family=config["family"], config=config,
                               architecture=architecture, final=_last_epoch_losses(run),
                               evaluation=_evaluations(run, eval_files or []), images=images))
    if not runs and damaged:
        raise UsageError(f"none of the {len(run_dirs)} run folder(s) could be read (see the warnings above); "
                         "fix or leave out the damaged files")
    if not runs:
        raise UsageError(f"none of the {len(run_dirs)} given path(s) is an aecli run folder ({RunDir.CONFIG} and "
                         f"{RunDir.BEST}/{RunDir.LAST}); give folders made by `aecli train`")
    return runs


def swept_keys(runs: list[RunSummary]) -> list[str]:
    """Hyperparameters (and model options) whose value differs between runs: the sweep's columns."""
    if len(runs) < 2:
        return []
    keys: list[str] = []
    candidates = [k for k in runs[0].config if k not in _NOT_SWEPT and k != "model"]
    for key in candidates:
        if len({json.dumps(r.config.get(key)) for r in runs}) > 1:
            keys.append(key)
    model_keys = sorted({k for r in runs for k in r.config.get("model", {})})
    for key in model_keys:
        if len({json.dumps(r.config.get("model", {}).get(key)) for r in runs}) > 1:
            keys.append(f"model.{key}")
    return keys


def config_value(run: RunSummary, key: str) -> Any:
    if key.startswith("model."):
        return run.config.get("model", {}).get(key[len("model."):])
    return run.config.get(key)
