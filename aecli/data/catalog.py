"""A Catalog lists a source's items (names, labels) before any pixel is decoded, and knows how to
decode any subset of them. Splits, limits and cache keys are computed on catalogs, so evaluating on
1,000 validation images of a 70,000-image folder decodes 1,000 files, not 70,000."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F


@dataclass
class DecodeOptions:
    image_size: int
    channels: int
    workers: int = 1
    progress: bool = False


# fill(indices, out, options) decodes catalog items ``indices`` into out[0:k] (readable ones, in order)
# and returns (catalog indices of the k stored rows, catalog indices of the unreadable ones).
FillFn = Callable[[np.ndarray, np.ndarray, DecodeOptions], tuple[np.ndarray, list[int]]]


@dataclass
class Catalog:
    description: str  # for messages: "folder /data/ffhq", "mnist (test split)"
    identity: str  # stable text that changes whenever the decoded pixels could: hashed into cache keys
    names: list[str]
    labels: np.ndarray  # int64 [n], -1 = unlabeled
    class_names: list[str]
    fill: FillFn
    slug: str = "data"  # human-readable prefix for cache file names
    reasons: dict[int, str] = field(default_factory=dict)  # why items could not be decoded (filled by fill)

    def __len__(self) -> int:
        return len(self.names)


def resize_uint8(x: torch.Tensor, size: int, channels: int) -> torch.Tensor:
    """uint8 [N, C, h, w] → uint8 [N, channels, size, size]: luma/replicate for channels, then shorter
    side → size (bilinear, antialiased when shrinking) and a center crop, as for decoded files."""
    if x.shape[1] == 3 and channels == 1:  # ITU-R 601-2 luma, the weights PIL's convert("L") uses
        w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        x = (x.float() * w).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)
    h, w = x.shape[-2:]
    if (h, w) != (size, size):
        nh, nw = (int(size * h / w), size) if w <= h else (size, int(size * w / h))
        y = F.interpolate(x.float(), size=(nh, nw), mode="bilinear", align_corners=False,
                          antialias=nh < h or nw < w)
        top, left = int(round((nh - size) / 2.0)), int(round((nw - size) / 2.0))
        x = y[..., top : top + size, left : left + size].round().clamp(0, 255).to(torch.uint8)
    if x.shape[1] == 1 and channels == 3:  # replicate after resizing: a third of the work
        x = x.expand(-1, 3, -1, -1)
    return x.contiguous()


def array_fill(rows: Callable[[np.ndarray], torch.Tensor], chunk: int = 2048) -> FillFn:
    """A fill for sources already in memory: ``rows(indices)`` gives uint8 [M, C, h, w] at native size."""

    def fill(indices: np.ndarray, out: np.ndarray, opts: DecodeOptions) -> tuple[np.ndarray, list[int]]:
        for start in range(0, len(indices), chunk):
            part = indices[start : start + chunk]
            out[start : start + len(part)] = resize_uint8(rows(part), opts.image_size, opts.channels).numpy()
        return np.asarray(indices, dtype=np.int64), []

    return fill
