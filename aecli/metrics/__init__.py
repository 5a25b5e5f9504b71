"""Image-quality metrics for `aecli evaluate`, one registered class each (aecli.metrics.registry):
per-image (l1, mse, psnr, ssim, ms-ssim, lpips), latent (kl, latent statistics, codebook health of VQ
models), distribution (rfid, fid, is, kid through torch-fidelity or clean-fid) and class (class-acc),
plus the one-pass driver (``evaluate``).

This package stays import-light (no torch): the CLI reads the metric declarations from here. Importing
a metric module registers its metrics; their order here is the order of the help and of the table.
"""

from aecli.metrics import per_image, latent, distribution, class_acc  # noqa: F401  (registers the metrics)
from aecli.metrics.registry import default_metrics, metric_names

METRICS = metric_names()
DEFAULT_METRICS = ",".join(default_metrics())
