"""LPIPS as a training loss (seed 000 Part B/C5/D2)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

LPIPS_MIN_SIZE = 64  # AlexNet's five stride/pool stages leave nothing of smaller images


class LPIPSLoss(nn.Module):
    """Wraps a built ``lpips.LPIPS`` module (the trainer builds it from checked local weights).

    Inputs in the model's ``value_range`` are mapped to [-1, 1] (lpips' convention), 1-channel images
    are repeated to 3, and images smaller than 64 px are bilinearly upsampled first. Returns one
    distance per image, shape (B,). The network is frozen and stays in eval mode: its linear layers
    carry dropout, which must not switch on when the trainer calls ``.train()`` on the objective.
    """

    def __init__(self, lpips_model: nn.Module, value_range: tuple[float, float]) -> None:
        super().__init__()
        self.net = lpips_model.eval().requires_grad_(False)
        self.lo, self.hi = float(value_range[0]), float(value_range[1])

    def train(self, mode: bool = True) -> LPIPSLoss:
        super().train(mode)
        self.net.eval()
        return self

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """The tensor lpips sees for an image batch in the model's value range."""
        x = (x - self.lo) * (2.0 / (self.hi - self.lo)) - 1.0
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        short = min(x.shape[-2:])
        if short < LPIPS_MIN_SIZE:
            scale = LPIPS_MIN_SIZE / short
            size = (round(x.shape[-2] * scale), round(x.shape[-1] * scale))
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return x

    def forward(self, recon: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.prepare(recon), self.prepare(x)).flatten()
