"""LPIPS per image, with the input handling the lpips package leaves to the caller."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from aecli.weights import LPIPS_MIN_SIZE


def lpips_resize_note(height: int, width: int, net: str) -> str | None:
    """Why (and how) images are resized for ``net``, or None when they are used as they are."""
    need = LPIPS_MIN_SIZE[net]
    if min(height, width) >= need:
        return None
    return (f"images upsampled (bilinear) from {height}x{width} to at least {need} px: the {net} trunk "
            "cannot take smaller inputs")


def lpips_distance(model: Any, pred: torch.Tensor, ref: torch.Tensor, net: str) -> torch.Tensor:
    """LPIPS between images in [0, 1], one value per image.

    LPIPS expects RGB in [-1, 1]; gray images are repeated to three channels, and images smaller
    than the trunk accepts are upsampled (see ``lpips_resize_note``).
    """
    h, w = pred.shape[-2:]
    need = LPIPS_MIN_SIZE[net]
    if min(h, w) < need:
        scale = need / min(h, w)
        size = (max(need, round(h * scale)), max(need, round(w * scale)))
        pred = F.interpolate(pred, size=size, mode="bilinear", align_corners=False)
        ref = F.interpolate(ref, size=size, mode="bilinear", align_corners=False)
    if pred.shape[1] == 1:
        pred, ref = pred.expand(-1, 3, -1, -1), ref.expand(-1, 3, -1, -1)
    with torch.no_grad():
        out = model(pred.float() * 2 - 1, ref.float() * 2 - 1)
    return out.flatten()
