"""The full autoencoder objective: reconstruction + β(step)·KL + LPIPS + adversarial term."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from aecli.errors import UsageError
from aecli.losses.adversarial import hinge_d_loss, hinge_g_loss
from aecli.losses.config import LossConfig
from aecli.losses.kl import kl_terms
from aecli.losses.perceptual import LPIPSLoss
from aecli.losses.reconstruction import check_recon_range, reconstruction_loss
from aecli.losses.schedules import kl_weight

if TYPE_CHECKING:
    from aecli.models.base import AEOutput


class AutoencoderObjective(nn.Module):
    """Computes the training loss and its logged components for any encoder family.

    Components (each a detached 0-dim tensor; no ``.item()`` here so the trainer decides when to
    sync): ``recon``; for Gaussian posteriors ``kl`` (before free bits), ``kl_weight`` and, with free
    bits, ``kl_free_bits`` (the term the loss uses); ``flow_log_det`` for flow-VAEs; for vector-quantised
    families ``vq_loss`` (added to the loss) and the codebook's health (``QuantizerOutput.log_parts``); ``lpips`` when
    its weight is > 0; ``adv_g`` when ``adv`` > 0 (0 before ``adv_start``).

    The adversarial term uses a fixed weight (no taming-style adaptive weight). The generator pass
    runs the discriminator, so its parameters receive gradients there too: zero the discriminator's
    gradients before its own step (as taming does).
    """

    def __init__(self, cfg: LossConfig, value_range: tuple[float, float], total_steps: int,
                 lpips_model: nn.Module | None = None,
                 discriminator: nn.Module | None = None) -> None:
        super().__init__()
        cfg.validate()
        check_recon_range(cfg.recon, value_range)
        if cfg.lpips > 0 and lpips_model is None:
            raise UsageError("--lpips > 0 needs an LPIPS network; build it with aecli.weights (or use --lpips 0)")
        if cfg.adv > 0 and discriminator is None:
            raise UsageError("--adv > 0 needs a discriminator (PatchDiscriminator); or use --adv 0")
        self.cfg = cfg
        self.value_range = value_range
        self.total_steps = total_steps
        kl_weight(cfg, 0, total_steps)  # refuses a cycle count larger than the run now, not mid-run
        self.lpips: LPIPSLoss | None = None
        if cfg.lpips > 0 and lpips_model is not None:
            self.lpips = lpips_model if isinstance(lpips_model, LPIPSLoss) else LPIPSLoss(lpips_model, value_range)
        self.discriminator = discriminator if cfg.adv > 0 else None

    def adv_active(self, step: int) -> bool:
        """Whether the adversarial term (and the discriminator's training) is on at ``step``."""
        return self.discriminator is not None and step >= self.cfg.adv_start

    def forward(self, x: torch.Tensor, out: AEOutput, step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        cfg = self.cfg
        parts: dict[str, torch.Tensor] = {}
        recon = reconstruction_loss(out.recon, x, cfg.recon, cfg.reduction)
        total = recon
        parts["recon"] = recon.detach()

        if hasattr(out.posterior, "kl_per_dim"):  # DiagonalGaussian; a PointLatent has no KL term
            terms = kl_terms(out.posterior, cfg.reduction, cfg.free_bits, z0=out.z0, z=out.z, log_det=out.log_det)
            w = kl_weight(cfg, step, self.total_steps)
            total = total + w * terms.kl
            parts["kl"] = terms.kl_raw.detach()
            parts["kl_weight"] = torch.tensor(w, device=x.device)
            if cfg.free_bits > 0:
                parts["kl_free_bits"] = terms.kl.detach()
            if terms.log_det is not None:
                parts["flow_log_det"] = terms.log_det.detach()

        if out.quant is not None:  # vq families: codebook + β·commitment, and the codebook's health
            total = total + out.quant.loss
            parts.update(out.quant.log_parts())

        if self.lpips is not None:
            lp = self.lpips(out.recon, x).mean()
            total = total + cfg.lpips * lp
            parts["lpips"] = lp.detach()

        if self.discriminator is not None:
            if self.adv_active(step):
                g = hinge_g_loss(self.discriminator(out.recon))
                total = total + cfg.adv * g
                parts["adv_g"] = g.detach()
            else:
                parts["adv_g"] = x.new_zeros(())  # same columns in every metrics row
        return total, parts

    def discriminator_loss(self, x: torch.Tensor, recon: torch.Tensor,
                           step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Hinge loss for the PatchGAN on real ``x`` and detached ``recon``. Before ``adv_start`` it is
        multiplied by 0 (taming's disc_factor) so a backward pass is harmless; skip the call with
        :meth:`adv_active` to save the compute."""
        if self.discriminator is None:
            raise UsageError("discriminator_loss needs --adv > 0 and a discriminator")
        real = self.discriminator(x.detach())
        fake = self.discriminator(recon.detach())
        loss = hinge_d_loss(real, fake) * (1.0 if self.adv_active(step) else 0.0)
        return loss, {"adv_d": loss.detach(), "logits_real": real.detach().mean(),
                      "logits_fake": fake.detach().mean()}
