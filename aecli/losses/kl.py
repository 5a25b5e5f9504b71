"""The KL term of VAEs and flow-VAEs, with free bits (seed 003).

Reductions match the reconstruction term: ``sum`` is nats per image (KL summed over latent elements,
averaged over the batch); ``mean`` additionally divides by the number of latent elements, which is
seed 001's ``torch.mean`` over all elements.

Free bits (Kingma et al. 2016): the KL of each latent dimension, averaged over the batch, is clamped
from below at ``free_bits`` nats, so the optimiser gains nothing by pushing a dimension under the
threshold. For spatial latents every element (c, h, w) counts as one dimension.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from aecli.models.distributions import DiagonalGaussian, standard_normal_log_prob


@dataclass
class KLTerms:
    kl: torch.Tensor  # what the loss uses (after free bits), 0-dim
    kl_raw: torch.Tensor  # the KL itself (before free bits), 0-dim, for logging
    log_det: torch.Tensor | None  # flow-vae: mean log|det J| in the same reduction, 0-dim


def _free_bits_deficit(kl_per_dim: torch.Tensor, free_bits: float) -> torch.Tensor:
    """Σ_d max(0, free_bits − mean_b KL_d): adding it to Σ_d mean_b KL_d gives Σ_d max(mean_b KL_d, free_bits)."""
    return (free_bits - kl_per_dim.mean(0)).clamp_min(0.0).sum()


def kl_terms(posterior: DiagonalGaussian, reduction: str, free_bits: float = 0.0,
             z0: torch.Tensor | None = None, z: torch.Tensor | None = None,
             log_det: torch.Tensor | None = None) -> KLTerms:
    """KL(q || N(0, I)); with ``log_det`` set, the flow-VAE single-sample estimate
    log q0(z0) − log|det J| − log N(z_K; 0, I) per image.

    Free bits on flows are applied to the base Gaussian's analytic KL: the deficit
    Σ_d max(0, free_bits − mean_b KL_base_d) is added to the estimate, so dimensions whose base KL
    sits below the threshold contribute exactly as if clamped there, and the estimate is unchanged
    when none does.
    """
    with torch.autocast(device_type=posterior.mean.device.type, enabled=False):
        q = DiagonalGaussian(posterior.mean.float(), posterior.logvar.float())
        per_dim = q.kl_per_dim().flatten(1)  # (B, D)
        n_latent = per_dim.shape[1]
        ld = None
        if log_det is None:
            raw = per_dim.sum(1).mean()
            kl = per_dim.mean(0).clamp_min(free_bits).sum() if free_bits > 0 else raw
        else:
            assert z0 is not None and z is not None, "flow KL needs z0 and z"
            ld = log_det.float().mean()
            raw = (q.log_prob(z0.float()) - log_det.float() - standard_normal_log_prob(z.float())).mean()
            kl = raw + _free_bits_deficit(per_dim, free_bits) if free_bits > 0 else raw
        if reduction == "mean":
            kl, raw = kl / n_latent, raw / n_latent
            ld = ld / n_latent if ld is not None else None
    return KLTerms(kl=kl, kl_raw=raw, log_det=ld)
