"""LPIPS as a training loss (seed 000 Part B/C5/D2)."""

from __future__ import annotations

import torch
from torch import nn

from aecli.pretrained import lpips_input, lpips_net_name


class LPIPSLoss(nn.Module):
    """Wraps a built ``lpips.LPIPS`` module (the trainer builds it with aecli.pretrained.build_lpips).

    Images in the model's ``value_range`` are prepared by ``aecli.pretrained.lpips_input``, the rule
    `aecli evaluate`'s lpips uses too: mapped to [-1, 1], gray repeated to RGB, images below the trunk's
    minimum size (alex 32, vgg 16, squeeze 24 px) upsampled bilinearly. Returns one distance per image,
    shape (B,). The network is frozen and stays in eval mode: its linear layers carry dropout, which must
    not switch on when the trainer calls ``.train()`` on the objective.
    """

    def __init__(self, lpips_model: nn.Module, value_range: tuple[float, float]) -> None:
        super().__init__()
        self.net = lpips_model.eval().requires_grad_(False)
        self.net_name = lpips_net_name(lpips_model)
        self.value_range = (float(value_range[0]), float(value_range[1]))

    def train(self, mode: bool = True) -> LPIPSLoss:
        super().train(mode)
        self.net.eval()
        return self

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """The tensor lpips sees for an image batch in the model's value range."""
        return lpips_input(x, self.net_name, self.value_range)

    def forward(self, recon: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.prepare(recon), self.prepare(x)).flatten()
