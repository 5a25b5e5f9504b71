"""The latent map figure: one colour per class, a legend of class names, unlabelled points in grey.

Readable from 2 to hundreds of classes: qualitative palettes while they last (tab10, then tab20,
then tab20+tab20b+tab20c), evenly spaced hues beyond; the legend sits outside the axes and grows
columns instead of running off the page; markers shrink as the point count grows.
"""

from __future__ import annotations

import math
import os
from typing import Any, Sequence

import numpy as np

from aecli.atomic import atomic_path

UNLABELLED_COLOUR = "#9e9e9e"
LEGEND_ROWS = 25  # entries per legend column
FORMATS = ("png", "svg", "pdf")


def class_colours(n: int) -> list[Any]:
    """``n`` distinguishable RGBA colours."""
    from matplotlib import colormaps

    if n <= 10:
        return [colormaps["tab10"](i) for i in range(n)]
    if n <= 20:
        return [colormaps["tab20"](i) for i in range(n)]
    if n <= 60:
        return [colormaps[name](i) for name in ("tab20", "tab20b", "tab20c") for i in range(20)][:n]
    # hsv wraps around: stop short of 1.0 so the first and last class differ.
    return [colormaps["hsv"](i / n * 0.95) for i in range(n)]


def marker_size(n_points: int) -> float:
    """Area in pt²: large enough to see for a few hundred points, small enough not to merge at 70k."""
    return float(min(24.0, max(0.5, 3000.0 / math.sqrt(max(n_points, 1)) / 4)))


def plot_embedding(coords: np.ndarray, labels: np.ndarray, class_names: Sequence[str],
                   path: str | os.PathLike[str], title: str = "",
                   axis_labels: tuple[str, str] | None = None) -> None:
    """Scatter ``coords`` [N, 2] coloured by ``labels`` (-1 = unlabelled) and write it atomically;
    the format follows the file's extension (png, svg or pdf). ``axis_labels`` (a PCA view) keeps the
    axes' ticks and names them; without them (t-SNE) the axes are unitless and bare."""
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state

    labels = np.asarray(labels, dtype=np.int64)
    present = sorted(int(c) for c in np.unique(labels) if c >= 0)
    # Colours are indexed by class id, so one class keeps its colour across checkpoints and subsamples.
    n_colours = max(len(class_names), (present[-1] + 1) if present else 0)
    colours = class_colours(n_colours)
    ncol = max(1, math.ceil((len(present) + (labels < 0).any()) / LEGEND_ROWS))
    fig = Figure(figsize=(8 + 1.6 * ncol, 7.5), dpi=150)
    ax = fig.add_subplot()
    s = marker_size(len(labels))
    unlabelled = labels < 0
    if unlabelled.any():
        # Beside classes, grey crosses: tab20/tab20c contain greys that plain grey dots would match.
        mixed = bool(present)
        ax.scatter(coords[unlabelled, 0], coords[unlabelled, 1], s=s, c=UNLABELLED_COLOUR,
                   marker="x" if mixed else "o", linewidths=0.6 if mixed else 0, alpha=0.6 if mixed else 1.0,
                   label="unlabelled" if mixed else f"unlabelled ({int(unlabelled.sum())})")
    for c in present:
        mask = labels == c
        name = class_names[c] if c < len(class_names) else str(c)
        ax.scatter(coords[mask, 0], coords[mask, 1], s=s, color=colours[c], linewidths=0, label=name)
    if axis_labels is not None:
        ax.set_xlabel(axis_labels[0])
        ax.set_ylabel(axis_labels[1])
    else:
        ax.set_xticks([])
        ax.set_yticks([])  # t-SNE axes have no units; ticks would suggest they do
    if title:
        ax.set_title(title, fontsize=9, wrap=True)
    legend = ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), ncol=ncol, fontsize=8 if ncol == 1 else 7,
                       markerscale=max(1.0, 6.0 / math.sqrt(s)), frameon=False, borderaxespad=0.0,
                       handletextpad=0.2, columnspacing=0.8)
    for handle in legend.legend_handles:
        handle.set_alpha(1.0)
    fmt = str(path).rsplit(".", 1)[-1].lower()
    with atomic_path(path) as tmp:
        # The temp file ends in .tmp, so the format must be named, not guessed from the name.
        fig.savefig(tmp, format=fmt if fmt in FORMATS else "png", bbox_inches="tight")
