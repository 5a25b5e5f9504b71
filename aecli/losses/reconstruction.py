"""Pixel reconstruction losses with the two reductions the seeds use.

``gaussian`` is the negative log-likelihood of a Gaussian decoder whose variance is fitted per image: the
maximum-likelihood σ² of an image is its MSE, which leaves ½·log(2πe·MSE) nats per element (the σ-VAE's
calibrated decoder, Rybkin et al. 2021, with one σ per image). Its gradient is the MSE's divided by
2·MSE: every image counts by its *relative* error, so it maximises the mean per-image PSNR that
`aecli evaluate` reports, where plain MSE spends the model on the few high-error images. With
``--reduction sum`` and β = 1 a VAE's loss is its negative ELBO in nats per image.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from aecli.errors import UsageError


def check_recon_range(recon: str, value_range: tuple[float, float]) -> None:
    """BCE is a likelihood of values in [0, 1]: refuse it for a Tanh model instead of producing NaNs."""
    if recon == "bce" and tuple(float(v) for v in value_range) != (0.0, 1.0):
        raise UsageError(
            f"--recon bce needs model outputs and data in [0, 1] (a sigmoid output), but this model's "
            f"value range is {tuple(value_range)}; use --recon mse or l1, or a family with "
            "output_activation=sigmoid"
        )


# The gaussian loss's floor on an image's MSE (in the model's value range): a perfectly reconstructed
# (e.g. constant) image would otherwise pull log(MSE) to -inf. 1e-6 is PSNR 66 dB on a [-1, 1] range.
MIN_MSE = 1e-6


def reconstruction_loss(recon: torch.Tensor, x: torch.Tensor, kind: str, reduction: str) -> torch.Tensor:
    """``mean``: per-element mean. ``sum``: summed over each image, averaged over the batch."""
    # fp32 and no autocast: binary_cross_entropy refuses autocast, and sums over 256² pixels
    # would lose precision in half precision anyway.
    with torch.autocast(device_type=x.device.type, enabled=False):
        recon, x = recon.float(), x.float()
        if kind == "l1":
            per_elem = F.l1_loss(recon, x, reduction="none")
        elif kind == "mse":
            per_elem = F.mse_loss(recon, x, reduction="none")
        elif kind == "bce":
            per_elem = F.binary_cross_entropy(recon, x, reduction="none")
        elif kind == "gaussian":
            mse = F.mse_loss(recon, x, reduction="none").flatten(1).mean(1).clamp_min(MIN_MSE)
            nll = 0.5 * (torch.log(mse) + math.log(2 * math.pi) + 1)  # nats per element, per image
            return nll.mean() if reduction == "mean" else nll.mean() * x[0].numel()
        else:
            raise UsageError(f"--recon must be one of l1, mse, bce, gaussian, got {kind!r}")
        if reduction == "mean":
            return per_elem.mean()
        return per_elem.sum() / x.shape[0]
