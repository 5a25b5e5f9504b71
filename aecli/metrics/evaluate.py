"""The one-pass evaluation driver behind `aecli evaluate`.

Per checkpoint the evaluation set is read once: each batch is decoded once and every reconstruction
metric, the KL, the latent statistics and the Inception features of the reconstructions come from
that single forward pass, on the device. The reference set's Inception features are computed once
per data set and cached on disk (``ReferenceCache``), so a sweep of checkpoints pays for them once.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import torch

from aecli.data.identity import source_key
from aecli.data.spec import DataSpec
from aecli.errors import UsageError
from aecli.hashing import sha256_file
from aecli.metrics import DEFAULT_METRICS, ENCODER_METRICS, GEN_METRICS, METRICS, RECON_METRICS, fidelity
from aecli.metrics import reconstruction as rec
from aecli.metrics.codebook import CODEBOOK_KEYS, CodebookStats, plot_usage
from aecli.metrics.classifier import ClassifierCache, ClassifierConfig, check_labelled, real_accuracy, sample_scores
from aecli.metrics.latent_stats import DEFAULT_ACTIVE_THRESHOLD, LatentStats
from aecli.metrics.perceptual import lpips_distance, lpips_resize_note
from aecli.weights import WEIGHT_FILES, check_net, require_weights, weights_dir

PER_IMAGE = RECON_METRICS + ("kl",)  # reported as mean ± std over images
# The column a metric is reported under, where it differs from its --metrics name: the training log's
# "kl" is per latent element (--reduction mean), evaluate's is per image, so they must not share a name.
VALUE_KEYS = {"kl": "kl_per_image"}
LATENT_KEYS = ("active_dims", "latent_dims", "mean_abs_activation", "total_variance")
# class-acc: means over classes; the per-class values are "<key>[<class name>]" (JSON/CSV only).
CLASS_KEYS = ("class_acc", "class_conf", "class_ceiling")
METRIC_HELP = {
    "l1": "mean absolute error per image on [0,1] images, then mean over images (the training log's recon "
          "is its loss on the model's value range: an L1 on [-1,1] is 2x this)",
    "mse": "mean squared error per image on [0,1] images, then mean over images (on [-1,1], as a training "
           "log's recon, it is 4x this)",
    "psnr": "per image 10·log10(1/MSE) on [0,1] images (capped at 100 dB), then mean ± std over images",
    "ssim": "Gaussian SSIM (11x11, sigma 1.5, data_range 1) per image, pytorch-msssim",
    "ms-ssim": "5-scale MS-SSIM (pytorch-msssim); needs images larger than 160 px",
    "lpips": "LPIPS v0.1 (lpips package) on [-1,1] RGB inputs, per image",
    "kl": "kl_per_image: KL(q(z|x) || N(0,I)) in nats, summed over latent dims, mean over images (VAE "
          "families; the training log's kl is per latent element with --reduction mean)",
    "rfid": "FID of the reconstructions against their inputs",
    "latent": "latent statistics of the encoder means: active dims (variance > threshold), mean |z|, "
              "total variance",
    "codebook": "vector-quantised families: codes chosen over the evaluation set's latent positions; perplexity "
                "= exp(entropy of code use), used codes, usage = used / codebook size, dead = never chosen "
                "(--codebook-plots DIR: a per-code usage histogram PNG per checkpoint)",
    "fid": "FID of --samples prior draws against the evaluation set",
    "is": "Inception Score of --samples prior draws (10 splits)",
    "kid": "KID of --samples prior draws against the evaluation set (subset size min(1000, N))",
    "class-acc": "conditional models: an MLP classifier trained on the real train split classifies "
                 "--class-samples draws per class; class_acc = fraction classified as the asked class, "
                 "class_conf = mean softmax probability of the asked class, class_ceiling = the classifier's "
                 "accuracy on the real val split; each the mean over classes (per class: class_acc[NAME], ...)",
}


def parse_metrics(names: Iterable[str]) -> list[str]:
    out: list[str] = []
    for raw in names:
        name = raw.strip().lower()
        if name not in METRICS:
            raise UsageError(f"unknown metric {raw!r}; choose from {', '.join(METRICS)}")
        if name not in out:
            out.append(name)
    if not out:
        raise UsageError(f"--metrics is empty; choose from {', '.join(METRICS)}")
    return out


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
        from aecli.metrics.baseline import parse_baseline

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
        require_weights(self.metrics, self.lpips_net, self.weights_dir, self.inception_weights,
                        self.lpips_weights, fid_backend=self.fid_backend)


@dataclass
class Row:
    """One evaluated model (or folder pair): values (None = n/a) and a note per metric."""

    name: str
    family: str
    n: int = 0
    image_size: str = ""
    samples: int | None = None
    values: dict[str, float | None] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)  # which source, split rule and N (Provenance)

    def na(self, metric: str, reason: str) -> None:
        metric = VALUE_KEYS.get(metric, metric)
        self.values[metric] = None
        self.notes[metric] = f"n/a: {reason}"


@dataclass
class EvalReport:
    rows: list[Row]
    metrics: list[str]
    device: str
    info: dict[str, Any]  # versions, weights hashes, FID protocol, cache counts
    warnings: list[str]


class _Recon:
    """Accumulates per-image reconstruction metrics of [0, 1] image batches."""

    def __init__(self, metrics: list[str], lpips_model: Any, lpips_net: str) -> None:
        self.metrics = [m for m in metrics if m in RECON_METRICS]
        self.lpips_model, self.lpips_net = lpips_model, lpips_net
        self.values: dict[str, list[torch.Tensor]] = {m: [] for m in self.metrics}
        self.unavailable: dict[str, str] = {}
        self.notes: dict[str, str] = {}

    def update(self, pred: torch.Tensor, ref: torch.Tensor) -> None:
        h, w = ref.shape[-2:]
        for m in self.metrics:
            if m in self.unavailable:
                continue
            reason = (rec.ssim_unavailable(h, w) if m == "ssim" else
                      rec.ms_ssim_unavailable(h, w) if m == "ms-ssim" else None)
            if reason:
                self.unavailable[m] = reason
                continue
            if m == "lpips":
                note = lpips_resize_note(h, w, self.lpips_net)
                if note:
                    self.notes[m] = note
                v = lpips_distance(self.lpips_model, pred, ref, self.lpips_net)
            else:
                fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = {
                    "l1": rec.l1, "mse": rec.mse, "psnr": rec.psnr, "ssim": rec.ssim, "ms-ssim": rec.ms_ssim}[m]
                v = fn(pred, ref)
            self.values[m].append(v.detach().float().cpu())

    def fill(self, row: Row) -> None:
        for m in self.metrics:
            if m in self.unavailable:
                row.na(m, self.unavailable[m])
                continue
            _mean_std(row, m, torch.cat(self.values[m]))
            if m in self.notes:
                row.notes[m] = self.notes[m]


def _class_na(row: Row, reason: str) -> None:
    for key in CLASS_KEYS:
        row.values[key] = None
    row.notes["class-acc"] = f"n/a: {reason}"


def _mean_std(row: Row, metric: str, values: torch.Tensor) -> None:
    v = values.double()
    row.values[metric] = float(v.mean())
    row.values[f"{metric}_std"] = float(v.std()) if len(v) > 1 else 0.0


class Evaluator:
    """Holds what a sweep shares: the device, metric networks, data sets and the reference cache."""

    def __init__(self, cfg: EvalConfig, log: Callable[[str], None] = lambda s: None) -> None:
        from aecli.devices import resolve_device

        cfg.validate()
        cfg.require_weights()  # before any data or model is loaded: fail in well under a second
        self.cfg, self.log = cfg, log
        self.device = resolve_device(cfg.device)
        self.warnings: list[str] = []
        cache_dir = cfg.cache_dir or str(weights_dir(cfg.weights_dir) / "aecli-fid-ref")
        self.cache = fidelity.ReferenceCache(cache_dir)
        self.classifiers = ClassifierCache(cache_dir)
        self._lpips: Any = None
        self.backend = fidelity.make_backend(cfg.fid_backend, cfg.clean_fid_mode)
        self._inception: Any = None
        self._inception_sha = ""
        self._datasets: dict[tuple[Any, ...], Any] = {}
        self.weights_info: dict[str, str] = {}

    # -- shared networks ---------------------------------------------------------------------------
    @property
    def needs_inception(self) -> bool:
        return any(m in self.cfg.metrics for m in ("rfid", *GEN_METRICS))

    def lpips(self) -> Any:
        if self._lpips is None and "lpips" in self.cfg.metrics:
            from aecli.weights import build_lpips

            cfg = self.cfg
            self._lpips = build_lpips(cfg.lpips_net, weights_dir=cfg.weights_dir, weights_file=cfg.lpips_weights,
                                      device=self.device)
            path = cfg.lpips_weights or str(weights_dir(cfg.weights_dir) / WEIGHT_FILES[cfg.lpips_net][0])
            self.weights_info[f"lpips-{cfg.lpips_net}"] = f"{path} sha256:{sha256_file(path)}"
        return self._lpips

    def inception(self) -> Any:
        if self._inception is None:
            key = self.backend.weights_key
            path = self.cfg.inception_weights or str(weights_dir(self.cfg.weights_dir) / WEIGHT_FILES[key][0])
            self._inception = self.backend.load(path, self.device)
            self._inception_sha = sha256_file(path)
            self.weights_info[key] = f"{path} sha256:{self._inception_sha}"
        return self._inception

    def features(self, images_u8: torch.Tensor) -> dict[str, torch.Tensor]:
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
        import dataclasses

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

    # -- generation metrics ------------------------------------------------------------------------
    def generation(self, row: Row, sampler: Callable[[int, torch.Generator], torch.Tensor] | None,
                   ref: dict[str, torch.Tensor] | None, reason: str, n_default: int) -> None:
        """fid/is/kid of ``sampler`` draws (images in [0, 1]) against reference features."""
        wanted = [m for m in GEN_METRICS if m in self.cfg.metrics]
        if not wanted:
            return
        if sampler is None:
            for m in wanted:
                row.na(m, reason)
            return
        n = self.cfg.samples or n_default
        row.samples = n
        gen = torch.Generator().manual_seed(self.cfg.seed)
        bank = fidelity.FeatureBank()
        done = 0
        while done < n:
            b = min(self.cfg.batch_size, n - done)
            bank.add(self.features(fidelity.to_uint8(sampler(b, gen))))
            done += b
        feats = bank.result()
        self._distribution_metrics(row, feats, ref, wanted, n, "generated")

    def _distribution_metrics(self, row: Row, feats: dict[str, torch.Tensor], ref: dict[str, torch.Tensor] | None,
                              wanted: list[str], n: int, what: str) -> None:
        if n < fidelity.FID_SMALL_N:
            self.warn(f"{row.name}: {', '.join(wanted)} on N={n} {what} images (< {fidelity.FID_SMALL_N}): "
                      "FID/KID are biased at small N; compare only runs with the same N")
        backend = self.backend
        for m in wanted:  # every number carries the protocol that made it (its note)
            if m == "is":
                if not backend.has_inception_score:
                    row.na("is", f"{backend.name} has no Inception Score; use --fid-backend torch-fidelity")
                    continue
                row.values["is"], row.values["is_std"] = fidelity.inception_score(feats["logits_unbiased"])
                row.notes["is"] = f"protocol {backend.tag()}"
            elif len(feats["2048"]) < 2 or ref is None or len(ref["2048"]) < 2:
                row.na(m, "needs at least 2 images on each side")
            elif m in ("fid", "rfid"):
                row.values[m] = backend.fid(feats["2048"], ref["2048"])
                row.notes[m] = f"protocol {backend.tag()}"
            else:
                row.values["kid"], row.values["kid_std"], subset = backend.kid(feats["2048"], ref["2048"])
                row.notes["kid"] = f"protocol {backend.tag()}, subset size {subset}, 100 subsets"

    def warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)

    # -- checkpoints -------------------------------------------------------------------------------
    def evaluate_checkpoint(self, path: str | os.PathLike[str]) -> Row:
        from aecli.checkpoint.format import load_model, read_header

        cfg = self.cfg
        header = read_header(path)
        spec = header.data
        ds = self.dataset(cfg.data, spec, path)
        source = ds.provenance.source
        self.log(f"{path}: {header.family} · {ds.provenance.line(len(ds))}")
        loaded = load_model(path, self.device, ema=cfg.ema)
        model = loaded.model
        row = Row(name=str(path), family=header.family, n=len(ds),
                  image_size=f"{spec.image_size}x{spec.image_size}x{spec.channels}",
                  data=ds.provenance.to_dict(len(ds)))
        wanted = [m for m in cfg.metrics if m in ENCODER_METRICS]
        if wanted and not model.has_encoder:
            for m in wanted:
                row.na(m, f"{header.family} has no encoder")
            wanted = []
        ref_needed = "rfid" in wanted or (model.has_prior and any(m in cfg.metrics for m in GEN_METRICS))
        ref_id = self.reference_identity(ds.source_id, len(ds), row.image_size, spec.channels) if ref_needed else None
        ref = self.cache.get(ref_id) if ref_id else None
        if wanted or (ref_id and ref is None):
            ref = self._data_pass(model, spec, ds, row, wanted, ref_id, ref)

        def sampler(b: int, gen: torch.Generator) -> torch.Tensor:
            labels = None
            if model.is_conditional:
                labels = torch.randint(0, model.config.num_classes, (b,), generator=gen).to(self.device)
            with torch.no_grad():
                return spec.to_unit_range(model.sample(b, labels=labels, generator=gen).float())

        self.generation(row, sampler if model.has_prior else None, ref,
                        f"{header.family} has no prior to sample from", len(ds))
        if "class-acc" in cfg.metrics:
            self._class_acc(row, model, spec, source)
        return row

    def _class_acc(self, row: Row, model: Any, spec: Any, source: str) -> None:
        """Seed 004: per class, how often the real-data classifier recognises the class asked for."""
        reason = ("" if model.is_conditional else
                  f"{row.family} is not class-conditional (train it with --num-classes on labelled data)")
        if not reason and not model.has_prior:
            reason = f"{row.family} has no prior to sample from"
        if reason:
            _class_na(row, reason)
            return
        train = self.dataset(self.cfg.data, spec, row.name, split="train")
        val = self.dataset(self.cfg.data, spec, row.name, split="val")
        check_labelled(train, "train")
        check_labelled(val, "val")
        # Label k must mean the same class to the model and to the classifier.
        if len(train.class_names) != model.config.num_classes or spec.class_names not in ([], train.class_names):
            raise UsageError(f"{row.name} was trained on classes {spec.class_names or model.config.num_classes} but "
                             f"{source} has {train.class_names}; pass --data with the labelled data it was "
                             "trained on")
        clf = self.classifiers.get_or_train(train, spec, ClassifierConfig(), self.device)

        def sample(k: int, b: int, gen: torch.Generator) -> torch.Tensor:
            labels = torch.full((b,), k, dtype=torch.long, device=self.device)
            with torch.no_grad():
                return model.sample(b, labels=labels, generator=gen)

        acc, conf = sample_scores(clf, sample, spec, model.config.num_classes, self.cfg.class_samples,
                                  self.cfg.batch_size, self.cfg.seed)
        ceiling = real_accuracy(clf, val, spec.value_range, self.device)
        for key, per_class in zip(CLASS_KEYS, (acc, conf, ceiling)):
            present = [v for v in per_class if v is not None]
            row.values[key] = sum(present) / len(present)
            row.values.update({f"{key}[{name}]": v for name, v in zip(train.class_names, per_class)})
        row.notes["class-acc"] = (f"{self.cfg.class_samples} draws per class; MLP classifier trained on "
                                  f"{len(train)} train images, ceiling on {len(val)} val images")

    def _data_pass(self, model: Any, spec: Any, ds: Any, row: Row, wanted: list[str],
                   ref_id: dict[str, Any] | None, ref: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor] | None:
        """The single read of the evaluation set for one checkpoint."""
        from aecli.data import BatchLoader, to_model_input
        from aecli.models.distributions import DiagonalGaussian

        collect_ref = ref_id is not None and ref is None
        recon = _Recon(wanted, self.lpips() if "lpips" in wanted else None, self.cfg.lpips_net)
        kl: list[torch.Tensor] = []
        kl_na = ""
        latent = LatentStats()
        codebook = CodebookStats(model.config.codebook_size) \
            if "codebook" in wanted and hasattr(model, "quantizer") else None
        rec_bank, ref_bank = fidelity.FeatureBank(), fidelity.FeatureBank()
        with torch.no_grad():
            for x_u8, labels in BatchLoader(ds, self.cfg.batch_size, shuffle=False, device=self.device):
                if collect_ref:
                    ref_bank.add(self.features(x_u8))
                if not wanted:
                    continue
                if model.is_conditional and bool((labels < 0).any()):
                    raise UsageError(f"{row.name} is class-conditional but the evaluation data is unlabeled; "
                                     "pass --data with the labeled data it was trained on")
                x = to_model_input(x_u8, spec.value_range)
                out = model(x, labels if model.is_conditional else None)
                pred = spec.to_unit_range(out.recon.float())
                recon.update(pred, x_u8.float() / 255.0)
                if "kl" in wanted:
                    if isinstance(out.posterior, DiagonalGaussian):
                        kl.append(out.posterior.kl().float().cpu())
                    else:
                        kl_na = f"{row.family} is not a VAE (deterministic latent)"
                if "latent" in wanted:
                    latent.update(out.posterior.mode())
                if codebook is not None and out.quant is not None:
                    codebook.update(out.quant.indices)
                if "rfid" in wanted:
                    rec_bank.add(self.features(fidelity.to_uint8(pred)))
        if collect_ref:
            assert ref_id is not None
            ref = ref_bank.result()
            self.cache.put(ref_id, ref)
        recon.fill(row)
        if "kl" in wanted:
            if kl_na:
                row.na("kl", kl_na)
            else:
                _mean_std(row, VALUE_KEYS["kl"], torch.cat(kl))
                if row.family == "flow-vae":
                    row.notes[VALUE_KEYS["kl"]] = "KL of the base posterior q0, before the planar flows"
        if "latent" in wanted:
            self._latent(row, latent)
        if "codebook" in wanted:
            self._codebook(row, codebook)
        if "rfid" in wanted:
            self._distribution_metrics(row, rec_bank.result(), ref, ["rfid"], len(ds), "reconstructed")
        return ref

    def _latent(self, row: Row, latent: LatentStats) -> None:
        if latent.count < 2:
            for k in LATENT_KEYS:
                row.values[k] = None
            row.notes["latent"] = "n/a: needs at least 2 images"
            return
        row.values.update(latent.summary(self.cfg.active_threshold))
        row.notes["latent"] = (f"encoder means {'x'.join(map(str, latent.shape))}; active = variance > "
                               f"{self.cfg.active_threshold:g}")

    def _codebook(self, row: Row, stats: CodebookStats | None) -> None:
        if stats is None:
            for k in CODEBOOK_KEYS:
                row.values[k] = None
            row.notes["codebook"] = f"n/a: {row.family} has no codebook (vector-quantised families: vq-vae, vqgan)"
            return
        row.values.update(stats.summary())
        note = f"{int(stats.counts.sum())} latent positions"
        if self.cfg.codebook_plots:
            path = Path(self.cfg.codebook_plots) / f"{_plot_stem(row.name)}_codebook.png"
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                short = "/".join(Path(row.name).parts[-2:])
                plot_usage(stats.counts, path, f"{row.family} {short}: code usage over {row.n} images")
            except OSError as exc:
                raise UsageError(f"cannot write the codebook histogram to {path}: {exc.strerror}; "
                                 "choose a writable --codebook-plots folder") from None
            note += f"; histogram {path}"
        row.notes["codebook"] = note

    # -- folders -----------------------------------------------------------------------------------
    def evaluate_folders(self, pred_dir: str, ref_dir: str, skip_unpaired: bool = False) -> Row:
        from aecli.metrics.folders import iter_pair_batches, pair_folders

        pairs = pair_folders(pred_dir, ref_dir, skip_unpaired, self.warn)
        cfg = self.cfg
        row = Row(name=f"{pred_dir} vs {ref_dir}", family="folders", n=len(pairs.items))
        sizes = sorted({f"{h}x{w}x{c}" for (h, w, c) in pairs.shapes})
        row.image_size = ",".join(sizes)
        for m in cfg.metrics:
            if m in ("kl", "latent"):
                row.na(m, "needs a checkpoint")
            elif m == "rfid":
                row.na(m, "use fid: the predictions are the reconstructions")
            elif m == "class-acc":
                _class_na(row, "needs a class-conditional checkpoint")
            elif m == "codebook":
                for k in CODEBOOK_KEYS:
                    row.values[k] = None
                row.notes[m] = "n/a: needs a checkpoint"
        wanted = [m for m in cfg.metrics if m in RECON_METRICS]
        dist = [m for m in cfg.metrics if m in GEN_METRICS]
        recon = _Recon(wanted, self.lpips() if "lpips" in wanted else None, cfg.lpips_net)
        ref_id = (self.reference_identity(pairs.ref_identity, len(pairs.items), row.image_size, pairs.channels)
                  if dist else None)
        ref = self.cache.get(ref_id) if ref_id else None
        pred_bank, ref_bank = fidelity.FeatureBank(), fidelity.FeatureBank()
        with torch.no_grad():
            for pred_u8, ref_u8 in iter_pair_batches(pairs, cfg.batch_size):
                pred_u8, ref_u8 = pred_u8.to(self.device), ref_u8.to(self.device)
                recon.update(pred_u8.float() / 255.0, ref_u8.float() / 255.0)
                if dist:
                    pred_bank.add(self.features(pred_u8))
                    if ref is None:
                        ref_bank.add(self.features(ref_u8))
        recon.fill(row)
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
        import lpips
        import pytorch_msssim
        import torch_fidelity
        import torchvision

        import aecli

        versions = {"aecli": aecli.__version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
                    "torch_fidelity": torch_fidelity.__version__, "lpips": getattr(lpips, "__version__", "?"),
                    "pytorch_msssim": getattr(pytorch_msssim, "__version__", "?")}
        info: dict[str, Any] = {
            "versions": versions,
            "weights": dict(self.weights_info),
            "split": self.cfg.split,
            "definitions": {m: METRIC_HELP[m] for m in self.cfg.metrics},
            "reference_cache": {"dir": str(self.cache.directory), "passes": self.cache.passes,
                                "hits": self.cache.hits},
        }
        if self.needs_inception:
            info["fid_protocol"] = self.backend.protocol()
            info["fid_backend"] = self.backend.tag()
            if self.backend.name == "clean-fid":
                versions["clean_fid"] = fidelity.clean_fid_version()
        if "class-acc" in self.cfg.metrics:
            info["classifier_cache"] = {"dir": str(self.classifiers.directory), "trained": self.classifiers.trained,
                                        "hits": self.classifiers.hits, "classifier": ClassifierConfig().to_dict()}
        for w in self.cache.warnings + self.classifiers.warnings:
            self.warn(w)
        return EvalReport(rows=rows, metrics=list(self.cfg.metrics), device=str(self.device), info=info,
                          warnings=list(self.warnings))


def evaluate_checkpoints(paths: Iterable[str | os.PathLike[str]], cfg: EvalConfig,
                         log: Callable[[str], None] = lambda s: None) -> EvalReport:
    """Evaluate each checkpoint on its (or ``cfg.data``'s) evaluation set; one row per checkpoint."""
    paths = list(paths)
    if not paths:
        raise UsageError("give at least one checkpoint, or --pred DIR --ref DIR")
    from aecli.metrics.baseline import parse_baseline, pca_row

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
    """Value keys in display order: each metric, then its std where there is one."""
    keys: list[str] = []
    for m in report.metrics:
        if m == "latent":
            keys += list(LATENT_KEYS)
            continue
        if m == "codebook":
            keys += list(CODEBOOK_KEYS)
            continue
        if m == "class-acc":  # then every per-class key any row has, in first-seen order
            keys += list(CLASS_KEYS)
            keys += [k for k in dict.fromkeys(k for r in report.rows for k in r.values) if "[" in k]
            continue
        key = VALUE_KEYS.get(m, m)
        keys.append(key)
        if m in PER_IMAGE or m in ("is", "kid"):
            keys.append(f"{key}_std")
    return keys


def _plot_stem(name: str) -> str:
    """runs/a/best.safetensors → a_best: the run folder keeps histograms of a sweep apart."""
    p = Path(name)
    return "_".join(part for part in (p.parent.name, p.stem) if part) or "checkpoint"


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
