"""Writing images: single PNGs and grids, atomically (no half-written PNG survives a kill)."""

from __future__ import annotations

import os
from pathlib import Path

import torch


def to_uint8(x01: torch.Tensor) -> torch.Tensor:
    """[0,1] float (C,H,W) → uint8 (H,W,C) on CPU, rounded like torch-fidelity expects."""
    return (x01.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu()


def save_png(x01: torch.Tensor, path: str | os.PathLike[str]) -> None:
    from PIL import Image

    from aecli.atomic import atomic_path

    arr = to_uint8(x01).numpy()
    img = Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr)
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")


def save_grid(images01: torch.Tensor, path: str | os.PathLike[str], nrow: int, padding: int = 2) -> Path:
    """Save a (N,C,H,W) batch in [0,1] as one grid PNG with ``nrow`` images per row."""
    from torchvision.utils import make_grid

    grid = make_grid(images01.detach().float().cpu().clamp(0, 1), nrow=max(1, nrow), padding=padding, pad_value=1.0)
    if images01.shape[1] == 1:
        grid = grid[:1]
    save_png(grid, path)
    return Path(path)
