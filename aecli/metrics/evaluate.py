"""The one-pass evaluation driver behind `aecli evaluate`.

Per checkpoint the evaluation set is read once: each batch is decoded once and handed to every per-image
and latent metric (aecli.metrics.registry), and the Inception features of the reconstructions come from
that same forward pass, on the device. The reference set's Inception features are computed once per
data set and cached on disk (``ReferenceCache``), so a sweep of checkpoints pays for them once. The
driver knows metric kinds, never metric names.
"""

from __future__ import annotations

import dataclasses
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import torch

from aecli.data.identity import source_key
from aecli.data.spec import DataSpec
from aecli.devices import resolve_device
from aecli.errors import UsageError
from aecli.hashing import sha256_file
from aecli.images import to_uint8
from aecli.metrics import DEFAULT_METRICS, fidelity
from aecli.metrics.baseline import parse_baseline, pca_row
from aecli.metrics.latent_stats import DEFAULT_ACTIVE_THRESHOLD
from aecli.metrics.registry import (CLASS, DISTRIBUTION, INCEPTION, LATENT, PER_IMAGE, Batch, Metric, Row, get_metric,
                                    parse_metrics, pretrained_needs)
from aecli.weights import check_net, inception_key, require_weights, weight_file, weights_dir

__all__ = ["EvalConfig", "EvalReport", "Evaluator", "Row", "columns", "display_names",
           "evaluate_checkpoints", "evaluate_folders", "format_value", "iter_notes", "parse_metrics"]

Sampler = Callable[[int, torch.Generator], torch.Tensor]  # (batch size, generator) → images in [0, 1]
Features = dict[str, torch.Tensor]


@dataclass
class EvalConfig:
    metrics: list[str] = field(default_factory=lambda: DEFAULT_METRICS.split(","))
    data: str | None = None  # None: each checkpoint's training source
    split: str = "auto"  # val of each checkpoint's training data, all of other data (aecli.data.open_for)
    n: int | None = None
    batch_size: int = 64
    device: str = "auto"
    lpips_net: str = "alex"
    samples: int | None = None  # None: as many as the evaluation set has images
    weights_dir: str | None = None
    inception_weights: str | None = None
    lpips_weights: str | None = None
    cache_dir: str | None = None  # None: <weights dir>/aecli-fid-ref
    ema: bool = False
    active_threshold: float = DEFAULT_ACTIVE_THRESHOLD
    data_root: str | None = None
    seed: int = 0  # prior draws for fid/is/kid and class-acc
    class_samples: int = 100  # class-acc: draws per class
    codebook_plots: str | None = None  # codebook: folder for each checkpoint's usage histogram PNG
    baseline: str | None = None  # "pca" or "pca:K": a PCA row after each checkpoint's (aecli.metrics.baseline)
    fid_backend: str = "torch-fidelity"  # or "clean-fid" (fid, rfid, kid; is needs torch-fidelity)
    clean_fid_mode: str = "clean"  # clean-fid: "clean" or "legacy_tensorflow"

    def validate(self) -> None:
        self.metrics = parse_metrics(self.metrics)
        parse_baseline(self.baseline)
        check_net(self.lpips_net)
        for name, value in (("--n", self.n), ("--samples", self.samples), ("--batch-size", self.batch_size),
                            ("--class-samples", self.class_samples)):
            if value is not None and value < 1:
                raise UsageError(f"{name} must be at least 1, got {value}")
        if not self.active_threshold > 0:
            raise UsageError(f"the active-dimension threshold must be positive, got {self.active_threshold}")
        fidelity.make_backend(self.fid_backend, self.clean_fid_mode)  # a bad name or a missing package

    def require_weights(self) -> None:
        require_weights(pretrained_needs(self.metrics), self.lpips_net, self.weights_dir, self.inception_weights,
                        self.lpips_weights, fid_backend=self.fid_backend)


@dataclass
class EvalReport:
    rows: list[Row]
    metrics: list[str]
    device: str
    info: dict[str, Any]  # versions, weights hashes, FID protocol, cache counts
    warnings: list[str]


class Evaluator:
    """Holds what a sweep shares: the device, the metric objects (and the networks they built), data
    sets, the Inception of the FID backend and the reference cache."""

    def __init__(self, cfg: EvalConfig, log: Callable[[str], None] = lambda s: None) -> None:
        cfg.validate()
        cfg.require_weights()  # before any data or model is loaded: fail in well under a second
        self.cfg, self.log = cfg, log
        self.device = resolve_device(cfg.device)
        self.warnings: list[str] = []
        self.cache_dir = cfg.cache_dir or str(weights_dir(cfg.weights_dir) / "aecli-fid-ref")
        self.cache = fidelity.ReferenceCache(self.cache_dir)
        self.backend = fidelity.make_backend(cfg.fid_backend, cfg.clean_fid_mode)
        self._inception: Any = None
        self._inception_sha = ""
        self._datasets: dict[tuple[Any, ...], Any] = {}
        self.weights_info: dict[str, str] = {}
        self.metrics: list[Metric] = [get_metric(name)(self) for name in cfg.metrics]

    def of_kind(self, *kinds: str) -> list[Metric]:
        return [m for m in self.metrics if m.kind in kinds]

    def warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)

    # -- the FID backend's Inception ---------------------------------------------------------------
    @property
    def needs_inception(self) -> bool:
        return any(INCEPTION in m.weights for m in self.metrics)

    def inception(self) -> Any:
        if self._inception is None:
            key = inception_key(self.cfg.fid_backend)
            path = weight_file(key, self.cfg.weights_dir, self.cfg.inception_weights)
            self._inception = self.backend.load(path, self.device)
            self._inception_sha = sha256_file(path)
            self.weights_info[key] = f"{path} sha256:{self._inception_sha}"
        return self._inception

    def features(self, images_u8: torch.Tensor) -> Features:
        return self.backend.features(self.inception(), images_u8)

    def reference_identity(self, source_id: str, n: int, size: str, channels: int) -> dict[str, Any]:
        import torch_fidelity

        self.inception()
        identity = {"data": source_id, "n": n, "image_size": size, "channels": channels,
                    "inception_sha256": self._inception_sha, "torch_fidelity": torch_fidelity.__version__,
                    "features": list(fidelity.FEATURES)}
        if self.backend.name == "torch-fidelity":  # the key torch-fidelity caches were always written under
            return identity
        return {**identity, "backend": self.backend.tag(), "features": ["2048"]}

    # -- data --------------------------------------------------------------------------------------
    def dataset(self, source: str | None, spec: DataSpec, checkpoint: Any, split: str | None = None) -> Any:
        """The evaluation set (--split, --n) or, given ``split``, that whole split (class-acc), opened
        as the checkpoint expects it (aecli.data.open_for; no ``source``: its training data). Its
        ``provenance`` is this checkpoint's view (same data as its training or not)."""
        from aecli.data import open_for

        limit = self.cfg.n if split is None else None
        split = split or self.cfg.split
        defaulted = not source
        source = source or spec.default_source(checkpoint)
        options = spec.split_options(source)
        key = (source_key(source), spec.image_size, spec.channels, split, limit, tuple(sorted(options.items())))
        if key not in self._datasets:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                self._datasets[key] = open_for(spec, source, checkpoint=checkpoint, split=split, limit=limit,
                                               data_root=self.cfg.data_root)
            self.warnings += [str(w.message) for w in caught]
        ds = self._datasets[key]
        ds.provenance = dataclasses.replace(ds.provenance, training_source=spec.source, defaulted=defaulted,
                                            same_as_training=spec.is_training_source(source))
        return ds

    # -- distribution metrics ----------------------------------------------------------------------
    def generation(self, row: Row, sampler: Sampler | None, ref: Features | None, reason: str,
                   n_default: int) -> None:
        """The distribution metrics of prior draws: ``sampler``'s images against reference features."""
        wanted = [m for m in self.of_kind(DISTRIBUTION) if m.of == "samples"]
        if not wanted:
            return
        if sampler is None:
            for m in wanted:
                m.na(row, reason)
            return
        n = self.cfg.samples or n_default
        row.samples = n
        gen = torch.Generator().manual_seed(self.cfg.seed)
        bank = fidelity.FeatureBank()
        done = 0
        while done < n:
            b = min(self.cfg.batch_size, n - done)
            bank.add(self.features(to_uint8(sampler(b, gen))))
            done += b
        self._distribution_metrics(row, bank.result(), ref, wanted, n, "generated")

    def _distribution_metrics(self, row: Row, feats: Features, ref: Features | None, wanted: list[Metric],
                              n: int, what: str) -> None:
        if n < fidelity.FID_SMALL_N:
            self.warn(f"{row.name}: {', '.join(m.name for m in wanted)} on N={n} {what} images (< "
                      f"{fidelity.FID_SMALL_N}): FID/KID are biased at small N; compare only runs with the same N")
        for m in wanted:  # every number carries the protocol that made it (its note)
            m.score(row, feats, ref, self.backend)

    # -- checkpoints -------------------------------------------------------------------------------
    def evaluate_checkpoint(self, path: str | os.PathLike[str]) -> Row:
        from aecli.checkpoint.format import load_model, read_header

        header = read_header(path)
        spec = header.data
        ds = self.dataset(self.cfg.data, spec, path)
        self.log(f"{path}: {header.family} · {ds.provenance.line(len(ds))}")
        model = load_model(path, self.device, ema=self.cfg.ema).model
        row = Row(name=str(path), family=header.family, n=len(ds),
                  image_size=f"{spec.image_size}x{spec.image_size}x{spec.channels}",
                  data=ds.provenance.to_dict(len(ds)))
        encoder = [m for m in self.metrics if m.uses_encoder()]
        if encoder and not model.has_encoder:
            for m in encoder:
                m.na(row, f"{header.family} has no encoder")
            encoder = []
        sampled = any(m.of == "samples" for m in self.metrics)
        ref_needed = any(m.of == "reconstructions" for m in encoder) or (model.has_prior and sampled)
        ref_id = self.reference_identity(ds.source_id, len(ds), row.image_size, spec.channels) if ref_needed else None
        ref = self.cache.get(ref_id) if ref_id else None
        if encoder or (ref_id and ref is None):
            ref = self._data_pass(model, spec, ds, row, encoder, ref_id, ref)
        self.generation(row, self._sampler(model, spec) if model.has_prior else None, ref,
                        f"{header.family} has no prior to sample from", len(ds))
        for m in self.of_kind(CLASS):
            m.evaluate(row, model, spec, ds.provenance.source)
        return row

    def _sampler(self, model: Any, spec: DataSpec) -> Sampler:
        def sampler(b: int, gen: torch.Generator) -> torch.Tensor:
            labels = None
            if model.is_conditional:
                labels = torch.randint(0, model.config.num_classes, (b,), generator=gen).to(self.device)
            with torch.no_grad():
                return spec.to_unit_range(model.sample(b, labels=labels, generator=gen).float())

        return sampler

    def _data_pass(self, model: Any, spec: DataSpec, ds: Any, row: Row, wanted: list[Metric],
                   ref_id: dict[str, Any] | None, ref: Features | None) -> Features | None:
        """The single read of the evaluation set for one checkpoint: every per-image and latent metric
        sees each batch's reconstruction; reconstruction-distribution metrics get its Inception features."""
        from aecli.data import BatchLoader

        collect_ref = ref_id is not None and ref is None
        passing = [m for m in wanted if m.kind in (PER_IMAGE, LATENT)]
        recon_dist = [m for m in wanted if m.kind == DISTRIBUTION]
        for m in passing:
            m.start(row, model)
        rec_bank, ref_bank = fidelity.FeatureBank(), fidelity.FeatureBank()
        with torch.no_grad():
            for x_u8, labels in BatchLoader(ds, self.cfg.batch_size, shuffle=False, device=self.device):
                if collect_ref:
                    ref_bank.add(self.features(x_u8))
                if not wanted:
                    continue
                batch = self._reconstruct(model, spec, row, x_u8, labels)
                for m in passing:
                    m.update(batch)
                if recon_dist:
                    rec_bank.add(self.features(to_uint8(batch.pred)))
        if collect_ref:
            assert ref_id is not None
            ref = ref_bank.result()
            self.cache.put(ref_id, ref)
        for m in passing:
            m.finish(row)
        if recon_dist:
            self._distribution_metrics(row, rec_bank.result(), ref, recon_dist, len(ds), "reconstructed")
        return ref

    def _reconstruct(self, model: Any, spec: DataSpec, row: Row, x_u8: torch.Tensor, labels: torch.Tensor) -> Batch:
        from aecli.data import to_model_input

        if model.is_conditional and bool((labels < 0).any()):
            raise UsageError(f"{row.name} is class-conditional but the evaluation data is unlabeled; "
                             "pass --data with the labeled data it was trained on")
        out = model(to_model_input(x_u8, spec.value_range), labels if model.is_conditional else None)
        return Batch(pred=spec.to_unit_range(out.recon.float()), ref=x_u8.float() / 255.0, out=out)

    # -- folders -----------------------------------------------------------------------------------
    def evaluate_folders(self, pred_dir: str, ref_dir: str, skip_unpaired: bool = False) -> Row:
        """Per-image metrics of each pair, distribution metrics of the predictions against the references."""
        from aecli.metrics.folders import iter_pair_batches, pair_folders

        pairs = pair_folders(pred_dir, ref_dir, skip_unpaired, self.warn)
        row = Row(name=f"{pred_dir} vs {ref_dir}", family="folders", n=len(pairs.items))
        row.image_size = ",".join(sorted({f"{h}x{w}x{c}" for (h, w, c) in pairs.shapes}))
        for m in self.metrics:
            if m.paired:
                m.na(row, m.paired)
        per_image = self.of_kind(PER_IMAGE)
        dist = [m for m in self.of_kind(DISTRIBUTION) if not m.paired]
        for m in per_image:
            m.start(row, None)
        ref_id = (self.reference_identity(pairs.ref_identity, len(pairs.items), row.image_size, pairs.channels)
                  if dist else None)
        ref = self.cache.get(ref_id) if ref_id else None
        pred_bank, ref_bank = fidelity.FeatureBank(), fidelity.FeatureBank()
        with torch.no_grad():
            for pred_u8, ref_u8 in iter_pair_batches(pairs, self.cfg.batch_size):
                pred_u8, ref_u8 = pred_u8.to(self.device), ref_u8.to(self.device)
                batch = Batch(pred=pred_u8.float() / 255.0, ref=ref_u8.float() / 255.0)
                for m in per_image:
                    m.update(batch)
                if dist:
                    pred_bank.add(self.features(pred_u8))
                    if ref is None:
                        ref_bank.add(self.features(ref_u8))
        for m in per_image:
            m.finish(row)
        if dist:
            if ref is None:
                assert ref_id is not None
                ref = ref_bank.result()
                self.cache.put(ref_id, ref)
            row.samples = len(pairs.items)
            self._distribution_metrics(row, pred_bank.result(), ref, dist, len(pairs.items), "predicted")
        return row

    # -- report ------------------------------------------------------------------------------------
    def report(self, rows: list[Row]) -> EvalReport:
        info: dict[str, Any] = {
            "versions": _versions(),
            "weights": dict(self.weights_info),
            "split": self.cfg.split,
            "definitions": {m.name: m.definition for m in self.metrics},
            "reference_cache": {"dir": str(self.cache.directory), "passes": self.cache.passes,
                                "hits": self.cache.hits},
        }
        if self.needs_inception:
            info["fid_protocol"] = self.backend.protocol()
            info["fid_backend"] = self.backend.tag()
            if self.backend.name == "clean-fid":
                info["versions"]["clean_fid"] = fidelity.clean_fid_version()
        for w in self.cache.warnings:
            self.warn(w)
        for m in self.metrics:
            info.update(m.report_info())
        return EvalReport(rows=rows, metrics=list(self.cfg.metrics), device=str(self.device), info=info,
                          warnings=list(self.warnings))


def _versions() -> dict[str, str]:
    import lpips
    import pytorch_msssim
    import torch_fidelity
    import torchvision

    import aecli

    return {"aecli": aecli.__version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
            "torch_fidelity": torch_fidelity.__version__, "lpips": getattr(lpips, "__version__", "?"),
            "pytorch_msssim": getattr(pytorch_msssim, "__version__", "?")}


def evaluate_checkpoints(paths: Iterable[str | os.PathLike[str]], cfg: EvalConfig,
                         log: Callable[[str], None] = lambda s: None) -> EvalReport:
    """Evaluate each checkpoint on its (or ``cfg.data``'s) evaluation set; one row per checkpoint."""
    paths = list(paths)
    if not paths:
        raise UsageError("give at least one checkpoint, or --pred DIR --ref DIR")
    k = parse_baseline(cfg.baseline)
    ev = Evaluator(cfg, log)
    rows = []
    for p in paths:
        rows.append(ev.evaluate_checkpoint(p))
        if k is not None:
            rows.append(pca_row(ev, p, k))
        if ev.device.type == "cuda":
            torch.cuda.empty_cache()
    return ev.report(rows)


def evaluate_folders(pred_dir: str, ref_dir: str, cfg: EvalConfig, skip_unpaired: bool = False,
                     log: Callable[[str], None] = lambda s: None) -> EvalReport:
    """Score images produced elsewhere against references, paired by relative file name."""
    ev = Evaluator(cfg, log)
    return ev.report([ev.evaluate_folders(pred_dir, ref_dir, skip_unpaired)])


def columns(report: EvalReport) -> list[str]:
    """Value keys in display order: each metric's columns (a mean, then its std where there is one)."""
    return [key for name in report.metrics for key in get_metric(name).report_columns(report.rows)]


def format_value(value: float | None) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float) and math.isfinite(value) and value == int(value) and abs(value) < 1e9:
        return str(int(value))
    return f"{value:.4g}"


def display_names(rows: list[Row]) -> list[str]:
    """Shortest path suffixes that tell the rows apart (sweeps are often run_*/best.safetensors)."""
    parts = [Path(r.name).parts if r.family != "folders" else (r.name,) for r in rows]
    depth = 1
    while depth < max((len(p) for p in parts), default=1):
        names = ["/".join(p[-depth:]) for p in parts]
        if len(set(names)) == len(names):
            return names
        depth += 1
    return [r.name for r in rows]


def iter_notes(report: EvalReport) -> Iterator[str]:
    """Footnotes, one per (row, note): metrics sharing a reason are listed together."""
    for row, name in zip(report.rows, display_names(report.rows)):
        grouped: dict[str, list[str]] = {}
        for metric, note in row.notes.items():
            grouped.setdefault(note, []).append(metric)
        for note, metrics in grouped.items():
            yield f"{name} {', '.join(metrics)}: {note}"
