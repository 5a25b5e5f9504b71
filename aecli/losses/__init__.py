"""Losses and schedules for `aecli train` (issue 3): reconstruction, KL with warm-up/cycles/free
bits, flow-VAE KL, LPIPS, the PatchGAN term for autoencoders and the MLP GAN's BCE losses."""

from aecli.losses.adversarial import (
    PatchDiscriminator,
    gan_discriminator_loss,
    gan_generator_loss,
    hinge_d_loss,
    hinge_g_loss,
)
from aecli.losses.config import RECONS, REDUCTIONS, LossConfig
from aecli.losses.kl import KLTerms, kl_terms
from aecli.losses.objective import AutoencoderObjective
from aecli.losses.perceptual import LPIPSLoss
from aecli.losses.reconstruction import check_recon_range, reconstruction_loss
from aecli.losses.schedules import cyclical_factor, kl_weight, warmup_factor

__all__ = [
    "RECONS", "REDUCTIONS", "AutoencoderObjective", "KLTerms", "LPIPSLoss", "LossConfig",
    "PatchDiscriminator", "check_recon_range", "cyclical_factor", "gan_discriminator_loss",
    "gan_generator_loss", "hinge_d_loss", "hinge_g_loss", "kl_terms", "kl_weight",
    "reconstruction_loss", "warmup_factor",
]
