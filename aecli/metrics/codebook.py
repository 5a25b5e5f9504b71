"""Codebook health of vector-quantised models (`aecli evaluate --metrics codebook`).

Over the evaluation set, every latent position picks one code. From the per-code counts:
- ``codebook_perplexity``: exp(entropy of the code distribution), in codes: K for uniform use of all
  K codes, 1 when everything maps to one code. The number of codes "effectively" in use.
- ``codebook_used``: codes chosen at least once; ``codebook_usage`` = used / codebook size;
- ``codebook_dead``: codes never chosen on this data (size - used).
Collapse shows as a perplexity and usage far below the codebook size.
"""

from __future__ import annotations

import math
import os

import torch

from aecli.atomic import atomic_path

class CodebookStats:
    """Per-code counts accumulated over batches of code indices."""

    def __init__(self, codebook_size: int) -> None:
        self.counts = torch.zeros(codebook_size, dtype=torch.long)

    def update(self, indices: torch.Tensor) -> None:
        self.counts += torch.bincount(indices.flatten().long().cpu(), minlength=len(self.counts))

    def summary(self) -> dict[str, float]:
        total = int(self.counts.sum())
        p = self.counts.double() / max(total, 1)
        entropy = float(-(p[p > 0] * p[p > 0].log()).sum())
        used = int((self.counts > 0).sum())
        size = len(self.counts)
        return {"codebook_perplexity": math.exp(entropy), "codebook_used": float(used),
                "codebook_size": float(size), "codebook_usage": used / size, "codebook_dead": float(size - used)}


def plot_usage(counts: torch.Tensor, path: str | os.PathLike[str], title: str = "") -> None:
    """Bar chart of each code's share of the latent positions, in code order, plus the same shares sorted
    (how fast usage falls off), written atomically as PNG."""
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state

    share = (counts.double() / max(int(counts.sum()), 1)).numpy()
    k = len(share)
    fig = Figure(figsize=(10, 5.5), dpi=120)
    top, bottom = fig.subplots(2, 1)
    top.bar(range(k), share, width=1.0, color="#3b75af", linewidth=0)
    top.axhline(1.0 / k, color="#c44e52", linewidth=0.8, label=f"uniform (1/{k})")
    top.set_xlim(-0.5, k - 0.5)
    top.set_xlabel("code index")
    top.set_ylabel("share of positions")
    top.legend(loc="upper right", fontsize=8, frameon=False)
    ordered = sorted(share, reverse=True)
    bottom.bar(range(k), ordered, width=1.0, color="#55a868", linewidth=0)
    bottom.axhline(1.0 / k, color="#c44e52", linewidth=0.8)
    bottom.set_xlim(-0.5, k - 0.5)
    bottom.set_xlabel("codes, most used first")
    bottom.set_ylabel("share")
    if title:
        top.set_title(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
