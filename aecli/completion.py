"""Shell completion values (`aecli --install-completion`): family names, metric names, run folders.

Called only when the shell asks (TAB), never at start-up: importing this module costs nothing, and only
family names need the model registry (which imports torch).
"""

from __future__ import annotations

import os
from pathlib import Path

RUN_MARKERS = ("config.json", "last.safetensors", "best.safetensors")  # what a run folder holds


def families(incomplete: str) -> list[tuple[str, str]]:
    from aecli.models import get_family, list_models

    return [(name, get_family(name).description) for name in list_models() if name.startswith(incomplete)]


def _comma_list(incomplete: str, choices: tuple[str, ...]) -> list[str]:
    """Complete the last item of a comma list, keeping those before it and skipping repeats."""
    head, comma, last = incomplete.rpartition(",")
    given = set(head.split(",")) if comma else set()
    return [f"{head}{comma}{c}" for c in choices if c.startswith(last) and c not in given]


def metrics(incomplete: str) -> list[str]:
    from aecli.metrics import METRICS

    return _comma_list(incomplete, METRICS)


def weight_metrics(incomplete: str) -> list[str]:
    from aecli.metrics.registry import weight_metric_names

    return _comma_list(incomplete, weight_metric_names())


def trackers(incomplete: str) -> list[str]:
    return [t for t in ("tensorboard", "wandb", "mlflow", "csv") if t.startswith(incomplete)]


def fid_backends(incomplete: str) -> list[str]:
    return [b for b in ("torch-fidelity", "clean-fid") if b.startswith(incomplete)]


def run_folders(incomplete: str) -> list[tuple[str, str]]:
    """Folders next to what is typed that are runs (hold config.json or a checkpoint), then other
    folders to descend into (with a trailing '/'); hidden folders only when '.' is typed."""
    typed = os.path.expanduser(incomplete)
    parent, prefix = os.path.split(typed)
    root = Path(parent or ".")
    try:
        entries = sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith(prefix))
    except OSError:
        return []
    shown_parent = incomplete[: len(incomplete) - len(prefix)]
    runs, others = [], []
    for p in entries:
        if p.name.startswith(".") and not prefix.startswith("."):
            continue
        if any((p / marker).is_file() for marker in RUN_MARKERS):
            runs.append((shown_parent + p.name, "run folder"))
        else:
            others.append((shown_parent + p.name + "/", ""))
    return runs + others


def resume_targets(incomplete: str) -> list[tuple[str, str]]:
    auto = [("auto", "continue --out if it holds a run")] if "auto".startswith(incomplete) else []
    return auto + run_folders(incomplete)
