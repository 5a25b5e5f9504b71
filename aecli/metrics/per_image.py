"""Per-image metrics: one value per image of a reconstruction (or predicted image) against its input,
reported as mean ± std over images. The formulas are in aecli.metrics.reconstruction and .perceptual.

Import-light (see aecli.metrics.registry): torch and the formulas are imported when a score is computed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from aecli.metrics.registry import PER_IMAGE, Batch, Metric, register_metric
from aecli.weights import LPIPS

if TYPE_CHECKING:
    import torch


def report_mean_std(row: Any, key: str, values: list[torch.Tensor]) -> None:
    """``row.values[key]`` = mean, ``[key_std]`` = std (0 for one image) of per-image values, in float64."""
    import torch

    v = torch.cat(values).double()
    row.values[key] = float(v.mean())
    row.values[f"{key}_std"] = float(v.std()) if len(v) > 1 else 0.0


class PerImageMetric(Metric):
    """Subclasses name a function of aecli.metrics.reconstruction in ``function`` or give ``score``;
    ``unavailable`` and ``note`` depend on the image size only."""

    kind: ClassVar[str] = PER_IMAGE
    function: ClassVar[str] = ""  # (pred, ref) -> one value per image, in aecli.metrics.reconstruction

    @classmethod
    def value_columns(cls) -> tuple[str, ...]:
        return cls.columns or (cls.name, f"{cls.name}_std")

    def score(self, pred: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        """One value per image of (B, C, H, W) batches in [0, 1]."""
        from aecli.metrics import reconstruction  # torch and pytorch-msssim: only when scoring

        return getattr(reconstruction, self.function)(pred, ref)

    def unavailable(self, height: int, width: int) -> str | None:
        """Why images of this size cannot be scored, or None."""
        return None

    def note(self, height: int, width: int) -> str | None:
        """A note on how images of this size were scored, or None."""
        return None

    def start(self, row: Any, model: Any) -> None:
        self.values: list[torch.Tensor] = []
        self.reason: str | None = None
        self.size_note: str | None = None

    def update(self, batch: Batch) -> None:
        if self.reason:
            return
        h, w = batch.ref.shape[-2:]
        self.reason = self.unavailable(h, w)
        if self.reason:
            return
        self.size_note = self.note(h, w) or self.size_note
        self.values.append(self.score(batch.pred, batch.ref).detach().float().cpu())

    def finish(self, row: Any) -> None:
        if self.reason:
            self.na(row, self.reason)
            return
        report_mean_std(row, self.value_columns()[0], self.values)
        if self.size_note:
            row.notes[self.notes_key()] = self.size_note


@register_metric
class L1(PerImageMetric):
    name = "l1"
    function = "l1"
    default = True
    help = "mean absolute error, on [0,1] images"
    definition = ("mean absolute error per image on [0,1] images, then mean over images (the training log's recon "
                  "is its loss on the model's value range: an L1 on [-1,1] is 2x this)")


@register_metric
class MSE(PerImageMetric):
    name = "mse"
    function = "mse"
    default = True
    help = "mean squared error, on [0,1] images"
    definition = ("mean squared error per image on [0,1] images, then mean over images (on [-1,1], as a training "
                  "log's recon, it is 4x this)")


@register_metric
class PSNR(PerImageMetric):
    name = "psnr"
    function = "psnr"
    default = True
    help = "dB, capped at 100"
    definition = "per image 10·log10(1/MSE) on [0,1] images (capped at 100 dB), then mean ± std over images"


@register_metric
class SSIM(PerImageMetric):
    name = "ssim"
    function = "ssim"
    default = True
    help = "Gaussian 11x11 window, images of at least 11 px"
    definition = "Gaussian SSIM (11x11, sigma 1.5, data_range 1) per image, pytorch-msssim"

    def unavailable(self, height: int, width: int) -> str | None:
        from aecli.metrics.reconstruction import ssim_unavailable

        return ssim_unavailable(height, width)


@register_metric
class MSSSIM(PerImageMetric):
    name = "ms-ssim"
    function = "ms_ssim"
    help = "5-scale MS-SSIM, images larger than 160 px"
    definition = "5-scale MS-SSIM (pytorch-msssim); needs images larger than 160 px"

    def unavailable(self, height: int, width: int) -> str | None:
        from aecli.metrics.reconstruction import ms_ssim_unavailable

        return ms_ssim_unavailable(height, width)


@register_metric
class LPIPSMetric(PerImageMetric):
    name = "lpips"
    default = True
    weights = (LPIPS,)
    help = "--lpips-net; images below the trunk's minimum size upsampled, as in train --lpips"
    definition = "LPIPS v0.1 (lpips package) on [-1,1] RGB inputs, per image"

    def __init__(self, ev: Any) -> None:
        super().__init__(ev)
        self._net: Any = None  # built at the first score, then shared by every row of the sweep

    def network(self) -> Any:
        if self._net is None:
            from aecli.hashing import sha256_file
            from aecli.pretrained import build_lpips
            from aecli.weights import weight_file

            cfg = self.ev.cfg
            self._net = build_lpips(cfg.lpips_net, weights_dir=cfg.weights_dir, weights_file=cfg.lpips_weights,
                                    device=self.ev.device)
            path = weight_file(cfg.lpips_net, cfg.weights_dir, cfg.lpips_weights)
            self.ev.weights_info[f"lpips-{cfg.lpips_net}"] = f"{path} sha256:{sha256_file(path)}"
        return self._net

    def note(self, height: int, width: int) -> str | None:
        from aecli.pretrained import lpips_resize_note

        return lpips_resize_note(height, width, self.ev.cfg.lpips_net)

    def score(self, pred: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        from aecli.metrics.perceptual import lpips_distance

        return lpips_distance(self.network(), pred, ref, self.ev.cfg.lpips_net)
