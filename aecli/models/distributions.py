"""Latent posteriors with one interface (diffusers-style): ``sample()``, ``mode()``, ``kl()``.

Deterministic autoencoders return a ``PointLatent`` so every caller can treat all families alike.
"""

from __future__ import annotations

import math

import torch


class DiagonalGaussian:
    """N(mean, exp(logvar)) per latent element; works for flat (B, D) and spatial (B, C, H, W)."""

    def __init__(self, mean: torch.Tensor, logvar: torch.Tensor) -> None:
        self.mean = mean
        # Clamp so exp() can neither overflow nor collapse to zero variance in fp16/bf16.
        self.logvar = logvar.clamp(-30.0, 20.0)

    @property
    def std(self) -> torch.Tensor:
        return torch.exp(0.5 * self.logvar)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        gen_device = generator.device if generator is not None else self.mean.device
        eps = torch.randn(self.mean.shape, generator=generator, device=gen_device, dtype=self.mean.dtype)
        eps = eps.to(self.mean.device)
        return self.mean + self.std * eps

    def mode(self) -> torch.Tensor:
        return self.mean

    def kl_per_dim(self) -> torch.Tensor:
        """KL(q || N(0, I)) for each latent element, shape of ``mean``."""
        return 0.5 * (self.mean.pow(2) + self.logvar.exp() - 1.0 - self.logvar)

    def kl(self) -> torch.Tensor:
        """KL summed over latent elements: one value per image, shape (B,)."""
        return self.kl_per_dim().flatten(1).sum(1)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log q(z) summed over latent elements, shape (B,)."""
        lp = -0.5 * ((z - self.mean).pow(2) / self.logvar.exp() + self.logvar + math.log(2 * math.pi))
        return lp.flatten(1).sum(1)


class PointLatent:
    """A deterministic code: sample and mode are the code itself, KL is zero."""

    def __init__(self, z: torch.Tensor) -> None:
        self.mean = z

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.mean

    def mode(self) -> torch.Tensor:
        return self.mean

    def kl(self) -> torch.Tensor:
        return self.mean.new_zeros(self.mean.shape[0])


def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I) summed over latent elements, shape (B,)."""
    return (-0.5 * (z.pow(2) + math.log(2 * math.pi))).flatten(1).sum(1)
