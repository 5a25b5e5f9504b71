"""The latent-diffusion autoencoder objective (taming-transformers / LDM ``LPIPSWithDiscriminator``).

Generator (autoencoder) side, per batch of B images:

    rec   = |x − x̂| (or (x − x̂)², ``pixel="mse"``) per element + perceptual_weight · LPIPS(x, x̂) per image
    nll   = Σ (rec / exp(logvar) + logvar) / B          logvar: one learned scalar
    reg   = Σ KL(q(z|x) ‖ N(0, I)) / B                   (a VQ model passes its codebook loss instead)
    g     = −mean D(x̂)                                   PatchGAN logits on the reconstruction
    λ     = disc_weight · clamp(‖∇_L nll‖ / (‖∇_L g‖ + 1e-4), 0, 1e4), detached
            (L: the decoder's last layer; taming's adaptive weight)
    loss  = nll + reg_weight · reg + λ · disc_factor · g

Discriminator side: ``disc_factor · ½(mean relu(1 − D(x)) + mean relu(1 + D(x̂)))``. ``disc_factor``
is 0 before ``disc_start`` (taming's ``adopt_weight``) and 1 after.

``LDMLoss`` is the formula with an explicit API (any model that has a decoder's last layer: the KL
family here, VQ families with their codebook term). ``LDMObjective`` adapts it to the trainer's
objective interface (``forward(x, out, step)``, ``discriminator_loss``, ``adv_active``).

One deliberate difference: LDM declares ``logvar`` as a parameter but leaves it out of its optimizer,
so it stays at ``logvar_init``; here it is trained with the model (``trainable``), as the loss intends.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import torch
from torch import nn

from aecli.errors import UsageError
from aecli.losses.adversarial import hinge_d_loss, hinge_g_loss
from aecli.losses.config import LossConfig
from aecli.losses.perceptual import LPIPSLoss
from aecli.losses.schedules import kl_weight

if TYPE_CHECKING:
    from aecli.models.base import AEOutput

PIXEL_LOSSES = ("l1", "mse")


@dataclass
class LDMLossConfig:
    """Defaults: LDM's kl-f8 config (``autoencoder_kl_32x32x4.yaml``)."""

    reg_weight: float = 1e-6  # kl_weight (LDM), codebook_weight (VQGAN)
    perceptual_weight: float = 1.0
    pixel: str = "l1"
    disc_weight: float = 0.5
    disc_start: int = 50001
    disc_factor: float = 1.0
    logvar_init: float = 0.0

    def validate(self) -> None:
        if self.pixel not in PIXEL_LOSSES:
            raise UsageError(f"the LDM objective's pixel loss must be one of {', '.join(PIXEL_LOSSES)} "
                             f"(--recon), got {self.pixel!r}; it learns its own variance, so use --recon l1 or mse")
        for name in ("reg_weight", "perceptual_weight", "disc_weight", "disc_factor"):
            if not getattr(self, name) >= 0:
                raise UsageError(f"LDM objective: {name} must be >= 0, got {getattr(self, name)}")


def adopt_weight(weight: float, step: int, start: int) -> float:
    """taming: a weight that is 0 before ``start`` (the discriminator's warm-up)."""
    return weight if step >= start else 0.0


def adaptive_weight(nll: torch.Tensor, g_loss: torch.Tensor, last_layer: torch.Tensor,
                    disc_weight: float) -> torch.Tensor:
    """disc_weight · ‖∇nll‖ / (‖∇g‖ + 1e-4) at ``last_layer``, clamped to [0, 1e4] and detached:
    the GAN term gets the same gradient scale as the reconstruction term at the decoder's output."""
    nll_grad = torch.autograd.grad(nll, last_layer, retain_graph=True)[0]
    g_grad = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    weight = torch.norm(nll_grad) / (torch.norm(g_grad) + 1e-4)
    return torch.clamp(weight, 0.0, 1e4).detach() * disc_weight


class LearnedLogVar(nn.Module):
    """The scalar log-variance of the reconstruction likelihood (its own module, so the trainer can
    optimise and checkpoint it with the model)."""

    def __init__(self, init: float) -> None:
        super().__init__()
        self.value = nn.Parameter(torch.tensor(float(init)))


class LDMLoss(nn.Module):
    """Both sides of the LDM objective. ``lpips`` (an ``LPIPSLoss``) may be None when
    ``perceptual_weight`` is 0; ``discriminator`` None means no adversarial term."""

    def __init__(self, cfg: LDMLossConfig, lpips: LPIPSLoss | None = None,
                 discriminator: nn.Module | None = None) -> None:
        super().__init__()
        cfg.validate()
        if cfg.perceptual_weight > 0 and lpips is None:
            raise UsageError("the LDM objective's perceptual term needs an LPIPS network (or --lpips 0)")
        self.cfg = cfg
        self.lpips = lpips
        self.discriminator = discriminator
        self.logvar = LearnedLogVar(cfg.logvar_init)

    def adv_active(self, step: int) -> bool:
        return self.discriminator is not None and adopt_weight(self.cfg.disc_factor, step, self.cfg.disc_start) > 0

    def generator_loss(self, x: torch.Tensor, recon: torch.Tensor, step: int,
                       last_layer: torch.Tensor | None, regularizer: torch.Tensor,
                       reg_weight: float | None = None,
                       mean_nll: bool = False) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The autoencoder's loss and its logged parts. ``regularizer``: the batch-mean KL summed over
        latent elements (or a VQ codebook loss); ``reg_weight`` overrides ``cfg.reg_weight`` (schedules).
        ``mean_nll``: taming's VQLPIPSWithDiscriminator, nll = mean(rec) over elements and no
        log-variance (its codebook loss is a per-element mean too). ``last_layer`` may be None only
        without a discriminator."""
        cfg = self.cfg
        reg_weight = cfg.reg_weight if reg_weight is None else reg_weight
        with torch.autocast(device_type=x.device.type, enabled=False):  # sums over all pixels: fp32
            xf, rf = x.float(), recon.float()
            pixel = (xf - rf).abs() if cfg.pixel == "l1" else (xf - rf).pow(2)
            rec = pixel
            parts = {"recon": pixel.detach().mean()}
            if cfg.perceptual_weight > 0 and self.lpips is not None:
                p = self.lpips(rf, xf).view(-1, 1, 1, 1)  # per image; broadcast over every element
                rec = rec + cfg.perceptual_weight * p
                parts["lpips"] = p.detach().mean()
            if mean_nll:
                nll = rec.mean()
            else:
                logvar = self.logvar.value
                nll = (rec / torch.exp(logvar) + logvar).sum() / x.shape[0]
                parts["logvar"] = logvar.detach()
            loss = nll + reg_weight * regularizer.float()
        parts.update(nll=nll.detach(), reg=regularizer.detach().float(),
                     reg_weight=x.new_tensor(reg_weight, dtype=torch.float32))
        if self.discriminator is not None:
            factor = adopt_weight(cfg.disc_factor, step, cfg.disc_start)
            zero = x.new_zeros((), dtype=torch.float32)
            g, d_weight = zero, zero
            if factor > 0:
                g = hinge_g_loss(self.discriminator(recon)).float()
                # No gradients in validation (taming catches the RuntimeError and uses 0 there).
                if torch.is_grad_enabled() and recon.requires_grad:
                    if last_layer is None:
                        raise UsageError("the LDM objective's adaptive weight needs the decoder's last layer")
                    d_weight = adaptive_weight(nll, g, last_layer, cfg.disc_weight)
                loss = loss + d_weight * factor * g
            parts.update(adv_g=g.detach(), d_weight=d_weight, disc_factor=x.new_tensor(factor))
        return loss, parts

    def discriminator_loss(self, x: torch.Tensor, recon: torch.Tensor,
                           step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Hinge loss on real ``x`` and the (detached) reconstruction, times disc_factor(step)."""
        if self.discriminator is None:
            raise UsageError("discriminator_loss needs --adv > 0 and a discriminator")
        real = self.discriminator(x.detach())
        fake = self.discriminator(recon.detach())
        factor = adopt_weight(self.cfg.disc_factor, step, self.cfg.disc_start)
        loss = factor * hinge_d_loss(real, fake)
        return loss, {"adv_d": loss.detach(), "logits_real": real.detach().mean(),
                      "logits_fake": fake.detach().mean()}


class LDMObjective(LDMLoss):
    """``--objective ldm`` for the trainer: LossConfig's flags mapped onto the LDM loss.

    --recon l1|mse: pixel loss; --lpips: perceptual weight; --beta (with --kl-warmup-steps/
    --kl-cycles): KL weight; --adv: disc weight; --adv-start: disc start. The reduction is the
    published one (sum over elements, mean over the batch), so --reduction does not apply.

    Vector-quantised families (vq-vae, vqgan) get taming's VQLPIPSWithDiscriminator instead: the
    per-element mean NLL without log-variance, plus --beta (codebook_weight, constant; taming 1.0)
    times the quantiser's loss (codebook + β·commitment).
    """

    def __init__(self, cfg: LossConfig, value_range: tuple[float, float], total_steps: int,
                 last_layer: Callable[[], torch.Tensor] | None, lpips_model: nn.Module | None = None,
                 discriminator: nn.Module | None = None) -> None:
        cfg.validate()
        if cfg.free_bits > 0:
            raise UsageError("--objective ldm has no free bits (its KL weight is tiny); drop --free-bits")
        if cfg.adv > 0 and last_layer is None:
            raise UsageError("--objective ldm with --adv needs a family that exposes its decoder's last "
                             "layer (ldm-kl, vq-vae, vqgan); use --adv 0 or the default objective")
        if cfg.adv > 0 and discriminator is None:
            raise UsageError("--adv > 0 needs a discriminator (PatchDiscriminator); or use --adv 0")
        lpips = None
        if cfg.lpips > 0:
            if lpips_model is None:
                raise UsageError("--lpips > 0 needs an LPIPS network (or use --lpips 0)")
            lpips = lpips_model if isinstance(lpips_model, LPIPSLoss) else LPIPSLoss(lpips_model, value_range)
        kl_weight(cfg, 0, total_steps)  # refuses a cycle count larger than the run now
        super().__init__(LDMLossConfig(reg_weight=cfg.beta, perceptual_weight=cfg.lpips, pixel=cfg.recon,
                                       disc_weight=cfg.adv, disc_start=cfg.adv_start),
                         lpips=lpips, discriminator=discriminator if cfg.adv > 0 else None)
        self.loss_cfg = cfg
        self.total_steps = total_steps
        self._last_layer = last_layer

    @property
    def trainable(self) -> nn.Module:
        """Loss parameters trained with the model (the log-variance)."""
        return self.logvar

    def forward(self, x: torch.Tensor, out: AEOutput, step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        last = self._last_layer() if self._last_layer is not None and self.discriminator is not None else None
        if out.quant is not None:  # VQ families: taming's VQLPIPSWithDiscriminator
            loss, parts = self.generator_loss(x, out.recon, step, last, out.quant.loss,
                                              reg_weight=self.loss_cfg.beta, mean_nll=True)
            parts.pop("reg")  # = vq_loss below
            parts["codebook_weight"] = parts.pop("reg_weight")
            parts.update(out.quant.log_parts())
            return loss, parts
        posterior = out.posterior
        if not hasattr(posterior, "kl_per_dim"):
            raise UsageError("--objective ldm needs a VAE (a Gaussian posterior) or a vector-quantised family "
                             "(vq-vae, vqgan); this family has neither")
        with torch.autocast(device_type=x.device.type, enabled=False):
            kl = posterior.kl_per_dim().float().flatten(1).sum(1).mean()  # Σ KL / B, as LDM
        loss, parts = self.generator_loss(x, out.recon, step, last, kl,
                                          reg_weight=kl_weight(self.loss_cfg, step, self.total_steps))
        parts["kl"] = parts.pop("reg")
        parts["kl_weight"] = parts.pop("reg_weight")
        return loss, parts
