"""Run-folder logs (metrics.jsonl, metrics.csv, loss_curves.png) and console progress.

In a terminal: a rich progress bar. In a batch log (stdout not a terminal): one timestamped plain line
every --log-every steps and per epoch, flushed, never a redraw.
"""

from __future__ import annotations

import csv
import io
import json
import sys
import time
from pathlib import Path
from typing import Any

from aecli.atomic import write_text
from aecli.training.rundir import RunDir

PLOT_INTERVAL_S = 30.0


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


class MetricsLog:
    """Rows of metrics, appended as JSON lines; the CSV and the plot are rebuilt from them."""

    def __init__(self, run_dir: Path, resume_step: int | None = None, epoch_done: bool = True) -> None:
        self.run_dir = run_dir
        self.files = RunDir(run_dir)
        self.rows: list[dict[str, Any]] = []
        self._last_plot = -PLOT_INTERVAL_S  # the first epoch always draws
        path = self.files.metrics_jsonl
        if resume_step is not None and path.exists():
            # Keep what happened up to the resumed step; a crash may have logged past it. A state saved
            # at an epoch's last step but before its end-of-epoch work (epoch_done False) is followed by
            # that work again, so its epoch rows, if a kill left them, would be written twice.
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                except ValueError:
                    continue  # a line cut by a kill
                step = row.get("step", 0)
                if step < resume_step or (step == resume_step and (epoch_done or row.get("kind") != "epoch")):
                    self.rows.append(row)
            write_text(path, "".join(json.dumps(r) + "\n" for r in self.rows))

    def add(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        with open(self.files.metrics_jsonl, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")

    def write_csv(self) -> None:
        columns: list[str] = []
        for row in self.rows:
            columns += [k for k in row if k not in columns]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns)
        writer.writeheader()
        writer.writerows(self.rows)
        write_text(self.files.metrics_csv, buf.getvalue())

    def plot(self, force: bool = False) -> None:
        """loss_curves.png: one panel per loss component (total first), train and validation per epoch.

        Drawing costs about a second (matplotlib), so within a run it is refreshed at most every
        PLOT_INTERVAL_S seconds; ``force`` (the last epoch) always draws.
        """
        if not force and time.monotonic() - self._last_plot < PLOT_INTERVAL_S:
            return
        self._last_plot = time.monotonic()
        from aecli.atomic import atomic_path

        fig = plot_loss_curves(self.rows, title=f"loss curves: {self.run_dir.name}")
        if fig is None:
            return
        with atomic_path(self.files.loss_curves) as tmp:
            fig.savefig(tmp, format="png", dpi=100)


# Numbers in a metrics row that are not losses: they get no panel in loss_curves.png.
NOT_LOSSES = frozenset({"kind", "split", "epoch", "step", "lr", "images", "images_per_s", "elapsed_s", "time",
                        "kl_weight"})
LOG_SCALE_RATIO = 30.0  # a component whose positive values span this factor or more is drawn on a log axis


def loss_components(rows: list[dict[str, Any]]) -> list[str]:
    """The loss columns of the epoch rows, total ``loss`` first, then in logged order."""
    names: list[str] = []
    for row in rows:
        names += [k for k, v in row.items() if k not in NOT_LOSSES and k not in names
                  and isinstance(v, (int, float)) and not isinstance(v, bool)]
    return sorted(names, key=lambda k: k != "loss")


def use_log_scale(values: list[float]) -> bool:
    """Log y when every value is positive and they span decades (a VAE's KL in epoch 1 is often ~1000×
    its later value, which flattens everything after it on a linear axis)."""
    return bool(values) and min(values) > 0 and max(values) / min(values) >= LOG_SCALE_RATIO


def plot_loss_curves(rows: list[dict[str, Any]], title: str = "") -> Any:
    """A matplotlib Figure of the epoch rows (None when there is nothing to draw)."""
    import math

    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state
    from matplotlib.ticker import MaxNLocator

    epochs = [r for r in rows if r.get("kind") == "epoch"]
    comps = loss_components(epochs)
    if not comps:
        return None
    cols = min(3, len(comps))
    nrows = math.ceil(len(comps) / cols)
    fig = Figure(figsize=(4.2 * cols, 3.3 * nrows + 0.5), layout="constrained")
    axes = fig.subplots(nrows, cols, squeeze=False).flatten()
    steps = {r["epoch"]: r.get("step") for r in epochs}
    for ax, comp in zip(axes, comps):
        values: list[float] = []
        for split, style, name in (("train", "-o", "train"), ("val", "--s", "validation")):
            pts = [(r["epoch"], float(r[comp])) for r in epochs if r.get("split") == split and comp in r]
            if pts:
                ax.plot(*zip(*pts), style, label=name, markersize=3)
                values += [v for _, v in pts]
        log = use_log_scale(values)
        if log:
            ax.set_yscale("log")
        ax.set_title("loss (total)" if comp == "loss" else comp)
        ax.set_xlabel("epoch")
        ax.set_ylabel(comp + (" (log scale)" if log else ""))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3, which="both" if log else "major")
    for ax in axes[len(comps):]:
        ax.set_visible(False)
    handles, labels = axes[0].get_legend_handles_labels()
    last = max(steps)
    per_epoch = f", {steps[last] // last} steps per epoch" if steps.get(last) and last else ""
    fig.suptitle(f"{title}{per_epoch}" if title else "")
    fig.legend(handles, labels, loc="outside upper right", ncols=2, frameon=False)
    return fig


class Console:
    """Progress for a terminal, plain periodic lines for batch logs."""

    def __init__(self, enabled: bool, total_steps: int, tty: bool | None = None) -> None:
        self.enabled = enabled
        self.tty = sys.stdout.isatty() if tty is None else tty
        self.progress = None
        if enabled and self.tty:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TimeRemainingColumn(), TextColumn("{task.fields[status]}"))
            self.task = self.progress.add_task("train", total=total_steps, status="")
            self.progress.start()

    def line(self, text: str) -> None:
        if not self.enabled:
            return
        if self.progress is not None:
            self.progress.console.print(text)
        else:
            print(f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] {text}", flush=True)

    def update(self, step: int, values: dict[str, Any], text: str) -> None:
        if not self.enabled:
            return
        status = " ".join(f"{k} {_fmt(v)}" for k, v in values.items())
        if self.progress is not None:
            self.progress.update(self.task, completed=step, status=status)
        else:
            self.line(f"{text} {status}")

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


class TensorBoardLog:
    """`--tracker tensorboard` (or `--tensorboard`): event files in RUN_DIR/tensorboard (seed 003:
    `tensorboard --logdir runs/`). The other trackers are in aecli.training.trackers."""

    def __init__(self, run_dir: Path, hparams: dict[str, Any]) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            from aecli.errors import UsageError

            raise UsageError("--tracker tensorboard needs the tensorboard package: pip install 'aecli[tensorboard]'"
                             ) from None
        self.writer = SummaryWriter(log_dir=str(RunDir(run_dir).tensorboard))
        # add_hparams wants scalars/strings only; lists and dicts become their JSON text.
        flat = {k: v if isinstance(v, (int, float, str, bool)) else json.dumps(v) for k, v in hparams.items()}
        self.writer.add_text("config", "```\n" + json.dumps(hparams, indent=2) + "\n```", 0)
        self.hparams = flat

    def scalars(self, split: str, values: dict[str, Any], step: int) -> None:
        from aecli.training.trackers import scalar_tags

        for tag, v in scalar_tags(split, values).items():
            self.writer.add_scalar(tag, v, step)

    def image(self, tag: str, png_path: Path, step: int) -> None:
        import numpy as np
        from PIL import Image

        arr = np.asarray(Image.open(png_path).convert("RGB"))
        self.writer.add_image(tag, arr, step, dataformats="HWC")

    def close(self, final: dict[str, float]) -> None:
        metrics = {f"hparam/{k}": v for k, v in final.items() if isinstance(v, (int, float))}
        self.writer.add_hparams(self.hparams, metrics, run_name=".")
        self.writer.close()
