"""`flow-vae`: seed 003's VAE whose posterior sample passes K planar flows (Rezende & Mohamed 2015).

f(z) = z + û·tanh(wᵀz + b), with û = u + (m(wᵀu) − wᵀu)·w/‖w‖², m(a) = −1 + softplus(a), which keeps
wᵀû ≥ −1 so every flow is invertible. log|det ∂f/∂z| = log|1 + ûᵀψ(z)|, ψ(z) = (1 − tanh²(wᵀz + b))·w.
The loss uses the summed log-det: KL = E[log q0(z0) − Σ log|det| − log p(zK)].
The prior N(0, I) lives in zK space, so sampling decodes N(0, I) draws directly (base ``sample``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from aecli.errors import UsageError
from aecli.models.conv import ConvVAE, ConvVAEConfig
from aecli.models.registry import register_model


class PlanarFlow(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        # Start close to the identity so early training sees a plain VAE.
        self.u = nn.Parameter(torch.empty(dim).normal_(0.0, 0.01))
        self.w = nn.Parameter(torch.empty(dim).normal_(0.0, 1.0 / math.sqrt(dim)))
        self.b = nn.Parameter(torch.zeros(1))

    def u_hat(self) -> torch.Tensor:
        wu = self.w @ self.u
        return self.u + (F.softplus(wu) - 1.0 - wu) * self.w / (self.w @ self.w).clamp_min(1e-12)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z: (B, D) → (f(z), log|det J|) with log-det of shape (B,)."""
        u = self.u_hat()
        t = torch.tanh(z @ self.w + self.b)  # (B,)
        det = 1.0 + (1.0 - t.pow(2)) * (self.w @ u)
        # The constraint makes det ≥ 0; the floor only guards log(0) at full tanh saturation.
        return z + t.unsqueeze(1) * u, det.abs().clamp_min(1e-12).log()


@dataclass
class FlowVAEConfig(ConvVAEConfig):
    # Seed 003's model keeps the seeds' strided trunk and its settings (conv-vae's default is residual).
    arch: str = "plain"
    activation: str = "relu"
    norm: str = "batch"
    widths: tuple[int, ...] = (32, 64)
    kernel_size: int = 3  # seed 003's 3×3 strided convs
    latent_dim: int = 128  # seed 003 §2
    flows: int = 4  # seed 003 §3: K planar flows

    def validate(self) -> None:
        if isinstance(self.flows, bool) or not isinstance(self.flows, int) or not 0 <= self.flows <= 64:
            raise UsageError(f"flows must be a whole number between 0 and 64, got {self.flows!r}")
        super().validate()


@register_model("flow-vae")
class FlowVAE(ConvVAE):
    Config = FlowVAEConfig
    description = "Conv VAE with K planar flows on the posterior sample (log-det term in the loss)"
    seed = "003 §2-§3"
    train_defaults: ClassVar[dict[str, Any]] = {}  # seed 003's plain trunk: aecli train's own defaults

    def __init__(self, config: FlowVAEConfig) -> None:
        super().__init__(config)
        dim = math.prod(self.latent_shape)  # a spatial latent is flowed as one flattened vector
        self.flows = nn.ModuleList(PlanarFlow(dim) for _ in range(config.flows))

    def transform_latent(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        flat = z.flatten(1)
        log_det = flat.new_zeros(flat.shape[0])
        for flow in self.flows:
            flat, ld = flow(flat)
            log_det = log_det + ld
        return flat.view_as(z), log_det
