"""Adversarial losses: the PatchGAN term for autoencoders (taming/latent-diffusion recipe) and the
BCE losses of the MLP GAN (seed 003 §4)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from aecli.errors import UsageError


class PatchDiscriminator(nn.Module):
    """pix2pix/taming ``NLayerDiscriminator``: 4×4 convs, BatchNorm, LeakyReLU(0.2), one logit per patch.

    ``n_layers`` stride-2 convs then two stride-1 convs: a 256² input gives 30×30 logits, 64² gives
    6×6, 32² gives 2×2.
    """

    def __init__(self, channels: int, ndf: int = 64, n_layers: int = 3) -> None:
        super().__init__()
        if n_layers < 1:
            raise UsageError(f"discriminator n_layers must be >= 1, got {n_layers}")
        self.n_layers = n_layers
        layers: list[nn.Module] = [nn.Conv2d(channels, ndf, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2**n, 8)
            stride = 2 if n < n_layers else 1
            layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, stride, 1, bias=False),
                       nn.BatchNorm2d(ndf * mult), nn.LeakyReLU(0.2, True)]
        layers.append(nn.Conv2d(ndf * mult, 1, 4, 1, 1))
        self.main = nn.Sequential(*layers)
        self.apply(_init_weights)

    def output_size(self, size: int) -> int:
        """Logit map side for a ``size``² input (k=4, p=1: stride 2 floors the half, stride 1 loses 1)."""
        for _ in range(self.n_layers):
            size = size // 2
        return size - 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.output_size(min(x.shape[-2:])) < 1:
            smallest = next(s for s in range(1, 4096) if self.output_size(s) >= 1)
            raise UsageError(f"the PatchGAN discriminator needs images of at least {smallest} px, "
                             f"got {tuple(x.shape[-2:])}; train without --adv")
        return self.main(x)


def _init_weights(m: nn.Module) -> None:
    # DCGAN/taming init: the hinge loss is tuned for these logit scales.
    if isinstance(m, nn.Conv2d):
        nn.init.normal_(m.weight, 0.0, 0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


def hinge_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """taming's hinge loss: ½·(mean relu(1 − D(x)) + mean relu(1 + D(x̂)))."""
    return 0.5 * (F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean())


def hinge_g_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Generator side of the hinge GAN: −mean D(x̂)."""
    return -fake_logits.mean()


def gan_discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor,
                           real_label: float = 0.9) -> torch.Tensor:
    """Seed 003: BCE-with-logits, real targets smoothed to ``real_label``, fake targets 0; the two
    halves are summed (DCGAN convention)."""
    real = F.binary_cross_entropy_with_logits(real_logits, torch.full_like(real_logits, real_label))
    fake = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
    return real + fake


def gan_generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating generator loss: BCE of D(G(z)) against 1 (no smoothing on the generator side)."""
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))
