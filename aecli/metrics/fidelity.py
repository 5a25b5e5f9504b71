"""FID / KID / IS through torch-fidelity, with an explicit Inception and our own feature cache.

We extract Inception features ourselves (images are already in memory, one pass per set) and hand
them to torch-fidelity's metric functions, so the numbers are torch-fidelity's. Its own
``calculate_metrics`` is avoided because its default ``cuda=True`` crashes on CPU nodes, it would
download the weights, and its feature cache is keyed by input name only, not by the weights used.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import pickle
from pathlib import Path
from typing import Any, Iterator

import torch

from aecli.atomic import atomic_path
from aecli.errors import WeightsMissingError

FEATURES = ("2048", "logits_unbiased")  # pool3 features (FID, KID) and logits (IS)
KID_MAX_SUBSET = 1000
INCEPTION_BATCH = 64  # 64 images at 299² is ~1.5 GB of activations: safe on any GPU and on CPU
FID_SMALL_N = 2048  # below this the Gaussian fit is poor (rank-deficient covariance): FID biased up


def protocol() -> str:
    import torch_fidelity

    return (f"torch-fidelity {torch_fidelity.__version__} InceptionV3 (pool3, 2048-d), uint8 inputs "
            "(x.clamp(0,1)*255).round(), TF1 bilinear resize to 299 — not comparable with clean-fid")


@contextlib.contextmanager
def _weights_only_loads() -> Iterator[None]:
    """torch-fidelity calls ``torch.load(path, weights_only=False)``; this env switch makes torch
    load it with weights_only=True anyway, so a hostile weights file cannot run pickled code."""
    key = "TORCH_FORCE_WEIGHTS_ONLY_LOAD"
    old = os.environ.get(key)
    os.environ[key] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old


def load_inception(path: str | os.PathLike[str], device: Any) -> Any:
    """torch-fidelity's FeatureExtractorInceptionV3 from a local file, strictly loaded, in eval mode."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    p = Path(path)
    if not p.is_file():
        raise WeightsMissingError(f"Inception weights {p} do not exist; run `aecli weights download "
                                  "--metrics fid` on a machine with internet or pass --inception-weights FILE")
    try:
        with _weights_only_loads():
            model = FeatureExtractorInceptionV3("inception-v3-compat", list(FEATURES),
                                                feature_extractor_weights_path=str(p))
    except (RuntimeError, OSError, EOFError, ValueError, pickle.UnpicklingError) as exc:
        raise WeightsMissingError(f"Inception weights {p} cannot be loaded strictly ({str(exc)[:160]}); "
                                  "give torch-fidelity's weights-inception-2015-12-05 file") from None
    return model.to(device)


def to_uint8(x01: torch.Tensor) -> torch.Tensor:
    """[0, 1] float images → uint8, the quantisation torch-fidelity's folder input would apply."""
    return (x01.clamp(0, 1) * 255).round().to(torch.uint8)


@torch.no_grad()
def inception_features(model: Any, images_u8: torch.Tensor) -> dict[str, torch.Tensor]:
    """Features of uint8 (B, C, H, W) images (gray repeated to RGB, like PIL's convert("RGB")), on CPU."""
    device = next(model.parameters()).device
    if images_u8.shape[1] == 1:
        images_u8 = images_u8.expand(-1, 3, -1, -1)
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in FEATURES}
    for chunk in images_u8.split(INCEPTION_BATCH):
        out = model.convert_features_tuple_to_dict(model(chunk.to(device)))
        for k in FEATURES:
            parts[k].append(out[k].float().cpu())
    return {k: torch.cat(v) for k, v in parts.items()}


class FeatureBank:
    """Collects features batch by batch."""

    def __init__(self) -> None:
        self.parts: dict[str, list[torch.Tensor]] = {k: [] for k in FEATURES}

    def add(self, feats: dict[str, torch.Tensor]) -> None:
        for k in FEATURES:
            self.parts[k].append(feats[k])

    def result(self) -> dict[str, torch.Tensor]:
        return {k: torch.cat(v) for k, v in self.parts.items()}


def fid(feats_a: torch.Tensor, feats_b: torch.Tensor) -> float:
    """Fréchet distance of two feature sets, torch-fidelity's formula.

    With fewer images than feature dimensions both covariances are low-rank, Σ = AᵀA with
    A = (X - μ)/√(N-1), and tr √(Σa Σb) equals the nuclear norm of Aa Abᵀ (the non-zero eigenvalues
    of AaᵀAa AbᵀAb are those of (Aa Abᵀ)(Aa Abᵀ)ᵀ). That is exact, takes milliseconds instead of a
    2048² non-symmetric eigendecomposition (5-15 s on a CPU), and avoids the square roots of
    round-off eigenvalues that torch-fidelity's route sums up.
    """
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_features_to_statistics, fid_statistics_to_metric

    if max(len(feats_a), len(feats_b)) <= feats_a.shape[1]:
        a, b = feats_a.double().cpu(), feats_b.double().cpu()
        mu_a, mu_b = a.mean(0), b.mean(0)
        fa = (a - mu_a) / math.sqrt(len(a) - 1)
        fb = (b - mu_b) / math.sqrt(len(b) - 1)
        tr_covmean = torch.linalg.svdvals(fa @ fb.T).sum()
        return float((mu_a - mu_b).pow(2).sum() + fa.pow(2).sum() + fb.pow(2).sum() - 2 * tr_covmean)
    stats_a = fid_features_to_statistics(feats_a.float().cpu())
    stats_b = fid_features_to_statistics(feats_b.float().cpu())
    return float(fid_statistics_to_metric(stats_a, stats_b, False)[KEY_METRIC_FID])


def kid(feats_a: torch.Tensor, feats_b: torch.Tensor) -> tuple[float, float, int]:
    """KID mean and std over torch-fidelity's 100 random subsets of size min(1000, N); returns the size too."""
    from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric

    subset = min(KID_MAX_SUBSET, len(feats_a), len(feats_b))
    out = kid_features_to_metric(feats_a.float().cpu(), feats_b.float().cpu(), kid_subset_size=subset,
                                 verbose=False)
    return float(out[KEY_METRIC_KID_MEAN]), float(out[KEY_METRIC_KID_STD]), subset


def inception_score(logits: torch.Tensor) -> tuple[float, float]:
    from torch_fidelity.metric_isc import KEY_METRIC_ISC_MEAN, KEY_METRIC_ISC_STD, isc_features_to_metric

    out = isc_features_to_metric(logits.float().cpu(), splits=min(10, len(logits)), shuffle=True, rng_seed=2020)
    return float(out[KEY_METRIC_ISC_MEAN]), float(out[KEY_METRIC_ISC_STD])


class ReferenceCache:
    """Reference-set Inception features, on disk (safetensors) and in memory.

    Keyed by everything that changes them: data identity, split, image size, channels, count,
    weights hash and torch-fidelity version. A second checkpoint on the same data skips the pass.
    """

    def __init__(self, directory: str | os.PathLike[str] | None) -> None:
        self.directory = Path(directory) if directory else None
        self.memory: dict[str, dict[str, torch.Tensor]] = {}
        self.passes = 0  # reference sets whose features had to be computed
        self.hits = 0  # lookups answered from memory or disk
        self.warnings: list[str] = []

    @staticmethod
    def key(identity: dict[str, Any]) -> str:
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:32]

    def _file(self, key: str) -> Path | None:
        return self.directory / f"inception-ref-{key}.safetensors" if self.directory else None

    def get(self, identity: dict[str, Any]) -> dict[str, torch.Tensor] | None:
        key = self.key(identity)
        if key in self.memory:
            self.hits += 1
            return self.memory[key]
        path = self._file(key)
        if path is None or not path.is_file():
            return None
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt") as fh:
                if json.loads((fh.metadata() or {}).get("identity", "null")) != identity:
                    return None
                feats = {k: fh.get_tensor(k) for k in FEATURES}
        except (SafetensorError, OSError, ValueError, KeyError):
            self.warnings.append(f"ignored unreadable reference cache {path}; recomputing it")
            return None
        self.memory[key] = feats
        self.hits += 1
        return feats

    def put(self, identity: dict[str, Any], feats: dict[str, torch.Tensor]) -> None:
        from safetensors.torch import save_file

        key = self.key(identity)
        self.memory[key] = feats
        self.passes += 1
        path = self._file(key)
        if path is None:
            return
        try:
            with atomic_path(path) as tmp:
                save_file({k: feats[k].contiguous() for k in FEATURES}, str(tmp),
                          metadata={"identity": json.dumps(identity, sort_keys=True)})
        except OSError as exc:  # a read-only shared cache must not fail the evaluation
            self.warnings.append(f"could not write the reference cache {path} ({exc.strerror}); "
                                 "pass --cache with a writable folder")
