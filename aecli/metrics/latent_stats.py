"""Latent-space statistics of seed 002: how many dimensions the encoder actually uses."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

DEFAULT_ACTIVE_THRESHOLD = 0.01  # a dimension whose variance over the data is below this is "dead"


@dataclass
class LatentStats:
    """Streaming per-dimension moments of latent codes (B, ...) flattened to (B, D), in float64."""

    count: int = 0
    total: torch.Tensor | None = None
    total_sq: torch.Tensor | None = None
    total_abs: torch.Tensor | None = None
    shape: tuple[int, ...] = field(default_factory=tuple)

    def update(self, z: torch.Tensor) -> None:
        flat = z.detach().flatten(1).double().cpu()
        if self.total is None:
            self.shape = tuple(z.shape[1:])
            self.total = torch.zeros(flat.shape[1], dtype=torch.float64)
            self.total_sq = torch.zeros_like(self.total)
            self.total_abs = torch.zeros_like(self.total)
        assert self.total_sq is not None and self.total_abs is not None
        self.count += flat.shape[0]
        self.total += flat.sum(0)
        self.total_sq += flat.pow(2).sum(0)
        self.total_abs += flat.abs().sum(0)

    def variance(self) -> torch.Tensor:
        """Unbiased per-dimension variance over the images (torch.var's default)."""
        if self.total is None or self.count < 2:
            raise ValueError("latent statistics need at least 2 images")
        assert self.total_sq is not None
        mean = self.total / self.count
        return ((self.total_sq - self.count * mean.pow(2)) / (self.count - 1)).clamp_min(0.0)

    def summary(self, threshold: float = DEFAULT_ACTIVE_THRESHOLD) -> dict[str, float]:
        var = self.variance()
        assert self.total_abs is not None
        return {
            "latent_dims": float(var.numel()),
            "active_dims": float((var > threshold).sum().item()),
            "mean_abs_activation": float(self.total_abs.sum().item() / (self.count * var.numel())),
            "total_variance": float(var.sum().item()),
        }
