"""Per-image reconstruction metrics on images in [0, 1] (B, C, H, W), computed on their device.

Every function returns one value per image, so callers report mean and spread over images, never a
metric of the batch mean (PSNR of the mean MSE is a different, larger number).
"""

from __future__ import annotations

import torch

# PSNR of a perfect reconstruction is infinite; capping MSE at this floor reports 100 dB instead, so
# means and JSON stay finite.
MSE_FLOOR = 1e-10
SSIM_WINDOW = 11  # pytorch-msssim's Gaussian window (sigma 1.5), the same as skimage's gaussian SSIM
MS_SSIM_MIN_SIDE = (SSIM_WINDOW - 1) * 2**4  # four 2x downsamplings must leave room for the window


def l1(pred: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    return (pred - ref).abs().flatten(1).mean(1)


def mse(pred: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    return (pred - ref).pow(2).flatten(1).mean(1)


def psnr(pred: torch.Tensor, ref: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """10·log10(range² / MSE) per image (skimage's peak_signal_noise_ratio)."""
    err = mse(pred.double(), ref.double()).clamp_min(MSE_FLOOR)
    return (10.0 * torch.log10(data_range**2 / err)).float()


def ssim_unavailable(height: int, width: int) -> str | None:
    side = min(height, width)
    if side < SSIM_WINDOW:
        return f"needs images of at least {SSIM_WINDOW} px for its Gaussian window (these are {side} px)"
    return None


def ms_ssim_unavailable(height: int, width: int) -> str | None:
    side = min(height, width)
    if side <= MS_SSIM_MIN_SIDE:
        return f"needs images larger than {MS_SSIM_MIN_SIDE} px (these are {side} px); use ssim"
    return None


def ssim(pred: torch.Tensor, ref: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Gaussian SSIM (11×11, σ=1.5, K=(0.01, 0.03)), channels averaged, per image.

    ``data_range`` must be given: pytorch-msssim defaults to 255, which silently inflates SSIM of
    [0, 1] images towards 1.
    """
    from pytorch_msssim import ssim as _ssim

    return _ssim(pred.float(), ref.float(), data_range=data_range, size_average=False)


def ms_ssim(pred: torch.Tensor, ref: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    from pytorch_msssim import ms_ssim as _ms_ssim

    return _ms_ssim(pred.float(), ref.float(), data_range=data_range, size_average=False)
