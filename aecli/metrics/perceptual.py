"""LPIPS per image, as `aecli evaluate` reports it."""

from __future__ import annotations

from typing import Any

import torch

from aecli.pretrained import lpips_input, lpips_resize_note

__all__ = ["lpips_distance", "lpips_resize_note"]


def lpips_distance(model: Any, pred: torch.Tensor, ref: torch.Tensor, net: str) -> torch.Tensor:
    """LPIPS between images in [0, 1], one value per image, with the training loss's input rule
    (``aecli.pretrained.lpips_input``: [-1, 1], gray to RGB, small images upsampled)."""
    with torch.no_grad():
        out = model(lpips_input(pred.float(), net), lpips_input(ref.float(), net))
    return out.flatten()
