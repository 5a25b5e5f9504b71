"""Image-quality metrics for `aecli evaluate`: reconstruction (l1, mse, psnr, ssim, ms-ssim), LPIPS,
FID/IS/KID through torch-fidelity, latent statistics, codebook health of VQ models (``codebook``), classifier-scored conditional samples
(``classifier``), and the one-pass driver (``evaluate``).

This module stays import-light (no torch): the CLI reads the metric names from here.
"""

RECON_METRICS = ("l1", "mse", "psnr", "ssim", "ms-ssim", "lpips")
ENCODER_METRICS = RECON_METRICS + ("kl", "rfid", "latent", "codebook")
GEN_METRICS = ("fid", "is", "kid")
CLASS_METRICS = ("class-acc",)  # conditional models: a classifier trained on the real data scores samples
METRICS = ENCODER_METRICS + GEN_METRICS + CLASS_METRICS
# `evaluate` without --metrics: what needs no pretrained file, plus LPIPS when its backbone is on disk
# (skipped with a note otherwise, so the default works offline). FID-type metrics are opt-in (slow on
# CPU, need Inception).
DEFAULT_METRICS = "l1,mse,psnr,ssim,lpips"
