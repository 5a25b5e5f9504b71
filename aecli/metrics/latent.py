"""Latent metrics: read from the encoder's output during the data pass (checkpoints only): the KL of
VAE posteriors, latent statistics (aecli.metrics.latent_stats), codebook health (aecli.metrics.codebook).

Import-light (see aecli.metrics.registry): torch and the statistics are imported when a pass starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from aecli.errors import UsageError
from aecli.metrics.registry import LATENT, Batch, Metric, register_metric

LATENT_KEYS = ("active_dims", "latent_dims", "mean_abs_activation", "total_variance")
CODEBOOK_KEYS = ("codebook_perplexity", "codebook_used", "codebook_size", "codebook_usage", "codebook_dead")


class LatentMetric(Metric):
    kind: ClassVar[str] = LATENT
    paired: ClassVar[str] = "needs a checkpoint"


@register_metric
class KL(LatentMetric):
    name = "kl"
    # The training log's "kl" is per latent element (--reduction mean), evaluate's is per image: they
    # must not share a column name.
    columns = ("kl_per_image", "kl_per_image_std")
    note_key = "kl_per_image"
    help = "column kl_per_image: nats per image, VAE families"
    definition = ("kl_per_image: KL(q(z|x) || N(0,I)) in nats, summed over latent dims, mean over images (VAE "
                  "families; the training log's kl is per latent element with --reduction mean)")

    def start(self, row: Any, model: Any) -> None:
        self.values: list[Any] = []
        self.reason = ""
        self.family = row.family

    def update(self, batch: Batch) -> None:
        from aecli.models.distributions import DiagonalGaussian

        if isinstance(batch.out.posterior, DiagonalGaussian):
            self.values.append(batch.out.posterior.kl().float().cpu())
        else:
            self.reason = f"{self.family} is not a VAE (deterministic latent)"

    def finish(self, row: Any) -> None:
        from aecli.metrics.per_image import report_mean_std

        if self.reason:
            self.na(row, self.reason)
            return
        report_mean_std(row, self.note_key, self.values)
        if row.family == "flow-vae":
            row.notes[self.note_key] = "KL of the base posterior q0, before the planar flows"


@register_metric
class Latent(LatentMetric):
    name = "latent"
    columns = LATENT_KEYS
    help = "active dims, mean |z|, total variance"
    definition = ("latent statistics of the encoder means: active dims (variance > threshold), mean |z|, "
                  "total variance")

    def start(self, row: Any, model: Any) -> None:
        from aecli.metrics.latent_stats import LatentStats

        self.stats = LatentStats()

    def update(self, batch: Batch) -> None:
        self.stats.update(batch.out.posterior.mode())

    def finish(self, row: Any) -> None:
        if self.stats.count < 2:
            self.na(row, "needs at least 2 images")
            return
        threshold = self.ev.cfg.active_threshold
        row.values.update(self.stats.summary(threshold))
        row.notes[self.name] = (f"encoder means {'x'.join(map(str, self.stats.shape))}; active = variance > "
                                f"{threshold:g}")


@register_metric
class Codebook(LatentMetric):
    name = "codebook"
    columns = CODEBOOK_KEYS
    help = ("vq-vae/vqgan: code perplexity, used codes, usage = used / codebook size, dead codes; "
            "--codebook-plots for a usage histogram")
    definition = ("vector-quantised families: codes chosen over the evaluation set's latent positions; perplexity "
                  "= exp(entropy of code use), used codes, usage = used / codebook size, dead = never chosen "
                  "(--codebook-plots DIR: a per-code usage histogram PNG per checkpoint)")

    def start(self, row: Any, model: Any) -> None:
        from aecli.metrics.codebook import CodebookStats

        self.stats = CodebookStats(model.config.codebook_size) if hasattr(model, "quantizer") else None

    def update(self, batch: Batch) -> None:
        if self.stats is not None and batch.out.quant is not None:
            self.stats.update(batch.out.quant.indices)

    def finish(self, row: Any) -> None:
        if self.stats is None:
            self.na(row, f"{row.family} has no codebook (vector-quantised families: vq-vae, vqgan)")
            return
        row.values.update(self.stats.summary())
        note = f"{int(self.stats.counts.sum())} latent positions"
        if self.ev.cfg.codebook_plots:
            note += f"; histogram {self._plot(row)}"
        row.notes[self.name] = note

    def _plot(self, row: Any) -> Path:
        from aecli.metrics.codebook import plot_usage

        path = Path(self.ev.cfg.codebook_plots) / f"{_plot_stem(row.name)}_codebook.png"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            short = "/".join(Path(row.name).parts[-2:])
            plot_usage(self.stats.counts, path, f"{row.family} {short}: code usage over {row.n} images")
        except OSError as exc:
            raise UsageError(f"cannot write the codebook histogram to {path}: {exc.strerror}; "
                             "choose a writable --codebook-plots folder") from None
        return path


def _plot_stem(name: str) -> str:
    """runs/a/best.safetensors → a_best: the run folder keeps histograms of a sweep apart."""
    p = Path(name)
    return "_".join(part for part in (p.parent.name, p.stem) if part) or "checkpoint"
