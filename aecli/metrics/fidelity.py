"""FID / KID / IS through torch-fidelity (default) or clean-fid, with an explicit local Inception and
our own feature cache.

We extract Inception features ourselves (images are already in memory, one pass per set) and hand
them to torch-fidelity's metric functions, so the numbers are torch-fidelity's. Its own
``calculate_metrics`` is avoided because its default ``cuda=True`` crashes on CPU nodes, it would
download the weights, and its feature cache is keyed by input name only, not by the weights used.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

import torch

from aecli.atomic import atomic_path
from aecli.errors import UsageError
from aecli.pretrained import INCEPTION_FEATURES, load_clean_fid_inception, load_inception
from aecli.weights import FID_BACKENDS

FEATURES = INCEPTION_FEATURES  # pool3 features (FID, KID) and logits (IS)
KID_MAX_SUBSET = 1000
INCEPTION_BATCH = 64  # 64 images at 299² is ~1.5 GB of activations: safe on any GPU and on CPU
FID_SMALL_N = 2048  # below this the Gaussian fit is poor (rank-deficient covariance): FID biased up


def protocol() -> str:
    import torch_fidelity

    return (f"torch-fidelity {torch_fidelity.__version__} InceptionV3 (pool3, 2048-d), uint8 inputs "
            "(x.clamp(0,1)*255).round(), TF1 bilinear resize to 299 — not comparable with clean-fid")


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
    """Collects features batch by batch (whatever keys the backend gives)."""

    def __init__(self) -> None:
        self.parts: dict[str, list[torch.Tensor]] = {}

    def add(self, feats: dict[str, torch.Tensor]) -> None:
        for k, v in feats.items():
            self.parts.setdefault(k, []).append(v)

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
        return low_rank_fid(feats_a, feats_b)
    stats_a = fid_features_to_statistics(feats_a.float().cpu())
    stats_b = fid_features_to_statistics(feats_b.float().cpu())
    return float(fid_statistics_to_metric(stats_a, stats_b, False)[KEY_METRIC_FID])


def low_rank_fid(feats_a: torch.Tensor, feats_b: torch.Tensor) -> float:
    """The Fréchet distance through the nuclear norm of Aa Abᵀ (see ``fid``): exact for any N."""
    a, b = feats_a.double().cpu(), feats_b.double().cpu()
    mu_a, mu_b = a.mean(0), b.mean(0)
    fa = (a - mu_a) / math.sqrt(len(a) - 1)
    fb = (b - mu_b) / math.sqrt(len(b) - 1)
    tr_covmean = torch.linalg.svdvals(fa @ fb.T).sum()
    return float((mu_a - mu_b).pow(2).sum() + fa.pow(2).sum() + fb.pow(2).sum() - 2 * tr_covmean)


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
                feats = {k: fh.get_tensor(k) for k in fh.keys()}
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
                save_file({k: v.contiguous() for k, v in feats.items()}, str(tmp),
                          metadata={"identity": json.dumps(identity, sort_keys=True)})
        except OSError as exc:  # a read-only shared cache must not fail the evaluation
            self.warnings.append(f"could not write the reference cache {path} ({exc.strerror}); "
                                 "pass --cache with a writable folder")


# -- backends: who turns images into features and features into numbers ---------------------------------
CLEAN_FID_MODES = ("clean", "legacy_tensorflow")


class TorchFidelityBackend:
    """torch-fidelity's Inception (TF1 bilinear resize inside the network) and formulas."""

    name = "torch-fidelity"
    weights_key = "inception"  # aecli.weights.WEIGHT_FILES
    has_inception_score = True

    def tag(self) -> str:
        import torch_fidelity

        return f"torch-fidelity {torch_fidelity.__version__}"

    def protocol(self) -> str:
        return protocol()

    def load(self, path: str | os.PathLike[str], device: Any) -> Any:
        return load_inception(path, device)

    def features(self, model: Any, images_u8: torch.Tensor) -> dict[str, torch.Tensor]:
        return inception_features(model, images_u8)

    def fid(self, a: torch.Tensor, b: torch.Tensor) -> float:
        return fid(a, b)

    def kid(self, a: torch.Tensor, b: torch.Tensor) -> tuple[float, float | None, int]:
        return kid(a, b)


class CleanFidBackend:
    """clean-fid (Parmar et al., CVPR 2022): its TorchScript Inception from a local file, its resize and its
    formulas. ``clean``: each channel resized to 299² by PIL bicubic in float, no re-quantisation;
    ``legacy_tensorflow``: the network's own TF1 bilinear resize (the protocol of the original TF code
    and of torch-fidelity). Their numbers differ; only the same mode is comparable."""

    name = "clean-fid"
    weights_key = "inception-clean-fid"
    has_inception_score = False  # clean-fid computes FID and KID only

    def __init__(self, mode: str) -> None:
        if mode not in CLEAN_FID_MODES:
            raise UsageError(f"--clean-fid-mode must be one of {', '.join(CLEAN_FID_MODES)}, got {mode!r}")
        self.mode = mode

    def tag(self) -> str:
        return f"clean-fid {clean_fid_version()} mode={self.mode}"

    def protocol(self) -> str:
        resize = ("PIL bicubic resize to 299 per channel in float (no re-quantisation)" if self.mode == "clean"
                  else "TF1 bilinear resize to 299 inside the network")
        return (f"{self.tag()}: TorchScript InceptionV3 (pool3, 2048-d), uint8 inputs (x.clamp(0,1)*255).round(), "
                f"{resize}; FID by clean-fid's frechet_distance (scipy sqrtm), KID by its kernel_distance — "
                "comparable only with clean-fid numbers of the same mode")

    def load(self, path: str | os.PathLike[str], device: Any) -> Any:
        return load_clean_fid_inception(path, device, resize_inside=self.mode == "legacy_tensorflow")

    @torch.no_grad()
    def features(self, model: Any, images_u8: torch.Tensor) -> dict[str, torch.Tensor]:
        """clean-fid's ResizeDataset path per image (uint8 HWC RGB → its resizer → float [0, 255] CHW),
        then its feature extractor, in batches."""
        import numpy as np
        from cleanfid.resize import build_resizer

        resize = build_resizer(self.mode)
        device = next(model.parameters()).device
        if images_u8.shape[1] == 1:
            images_u8 = images_u8.expand(-1, 3, -1, -1)
        parts = []
        for chunk in images_u8.split(INCEPTION_BATCH):
            arrays = [resize(np.ascontiguousarray(img.permute(1, 2, 0).cpu().numpy())) for img in chunk]
            x = torch.stack([torch.from_numpy(np.asarray(a, dtype=np.float32)).permute(2, 0, 1) for a in arrays])
            parts.append(model(x.to(device)).float().cpu())
        return {"2048": torch.cat(parts)}

    def fid(self, a: torch.Tensor, b: torch.Tensor) -> float:
        """clean-fid's fid_from_feats; with no more images than dimensions the covariance product is
        singular and its 2048² scipy sqrtm takes minutes on a CPU, so the same distance is computed
        exactly by ``low_rank_fid`` (agreement with clean-fid's route is tested)."""
        from cleanfid.fid import fid_from_feats

        if max(len(a), len(b)) <= a.shape[1]:
            return low_rank_fid(a, b)
        return float(fid_from_feats(a.double().numpy(), b.double().numpy()))

    def kid(self, a: torch.Tensor, b: torch.Tensor) -> tuple[float, float | None, int]:
        """clean-fid's kernel_distance; it draws subsets from numpy's global generator, seeded here (and
        restored) so the number is reproducible. It reports no std."""
        import numpy as np
        from cleanfid.fid import kernel_distance

        state = np.random.get_state()
        np.random.seed(2020)
        try:
            value = kernel_distance(a.double().numpy(), b.double().numpy())
        finally:
            np.random.set_state(state)
        return float(value), None, min(KID_MAX_SUBSET, len(a), len(b))


def clean_fid_version() -> str:
    from importlib.metadata import version

    return version("clean-fid")  # the cleanfid module has no __version__


def make_backend(name: str = "torch-fidelity", clean_fid_mode: str = "clean") -> Any:
    if clean_fid_mode not in CLEAN_FID_MODES:  # refused whatever the backend: a typo is never ignored
        raise UsageError(f"--clean-fid-mode must be one of {', '.join(CLEAN_FID_MODES)}, got {clean_fid_mode!r}")
    if name == "torch-fidelity":
        return TorchFidelityBackend()
    if name == "clean-fid":
        try:
            import cleanfid  # noqa: F401
        except ImportError:
            raise UsageError("--fid-backend clean-fid needs the clean-fid package: pip install 'aecli[clean-fid]'"
                             ) from None
        return CleanFidBackend(clean_fid_mode)
    raise UsageError(f"--fid-backend must be one of {', '.join(FID_BACKENDS)}, got {name!r}")
