"""Losses and schedules for `aecli train` (issue 3): reconstruction, KL with warm-up/cycles/free
bits, flow-VAE KL, LPIPS, the PatchGAN term for autoencoders and the MLP GAN's BCE losses.

Names are imported on first use: `aecli train --help` reads aecli.losses.config (the loss options)
without loading torch."""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "PatchDiscriminator": "adversarial", "gan_discriminator_loss": "adversarial",
    "gan_generator_loss": "adversarial", "hinge_d_loss": "adversarial", "hinge_g_loss": "adversarial",
    "RECONS": "config", "REDUCTIONS": "config", "LossConfig": "config",
    "KLTerms": "kl", "kl_terms": "kl",
    "AutoencoderObjective": "objective",
    "LPIPSLoss": "perceptual",
    "check_recon_range": "reconstruction", "reconstruction_loss": "reconstruction",
    "cyclical_factor": "schedules", "kl_weight": "schedules", "warmup_factor": "schedules",
}
__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'aecli.losses' has no attribute {name!r}")
    return getattr(importlib.import_module(f"aecli.losses.{_HOMES[name]}"), name)
