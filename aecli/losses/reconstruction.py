"""Pixel reconstruction losses with the two reductions the seeds use."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from aecli.errors import UsageError


def check_recon_range(recon: str, value_range: tuple[float, float]) -> None:
    """BCE is a likelihood of values in [0, 1]: refuse it for a Tanh model instead of producing NaNs."""
    if recon == "bce" and tuple(float(v) for v in value_range) != (0.0, 1.0):
        raise UsageError(
            f"--recon bce needs model outputs and data in [0, 1] (a sigmoid output), but this model's "
            f"value range is {tuple(value_range)}; use --recon mse or l1, or a family with "
            "output_activation=sigmoid"
        )


def reconstruction_loss(recon: torch.Tensor, x: torch.Tensor, kind: str, reduction: str) -> torch.Tensor:
    """``mean``: per-element mean. ``sum``: summed over each image, averaged over the batch."""
    # fp32 and no autocast: binary_cross_entropy refuses autocast, and sums over 256² pixels
    # would lose precision in half precision anyway.
    with torch.autocast(device_type=x.device.type, enabled=False):
        recon, x = recon.float(), x.float()
        if kind == "l1":
            per_elem = F.l1_loss(recon, x, reduction="none")
        elif kind == "mse":
            per_elem = F.mse_loss(recon, x, reduction="none")
        elif kind == "bce":
            per_elem = F.binary_cross_entropy(recon, x, reduction="none")
        else:
            raise UsageError(f"--recon must be one of l1, mse, bce, got {kind!r}")
        if reduction == "mean":
            return per_elem.mean()
        return per_elem.sum() / x.shape[0]
