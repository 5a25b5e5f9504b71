"""FID / KID / IS through torch-fidelity (default) or clean-fid, with an explicit local Inception and
our own feature cache.

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
from aecli.errors import UsageError, WeightsMissingError
from aecli.images import to_uint8  # noqa: F401  (evaluate quantises generated images with it)

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
from aecli.weights import FID_BACKENDS  # noqa: E402  (one list, importable without torch)
CLEAN_FID_MODES = ("clean", "legacy_tensorflow")
CLEAN_FID_SIZE = 299


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


def load_clean_fid_inception(path: str | os.PathLike[str], device: Any, resize_inside: bool) -> Any:
    """clean-fid's InceptionV3W from an explicit local file, never downloading.

    InceptionV3W takes a folder and loads ``inception-2015-12-05.pt`` from it (downloading it when
    asked); a file of another name is linked into a temporary folder under that name. The file is a
    TorchScript archive: torch.jit.load runs no Python pickle code, only the archive's TorchScript graph.
    """
    import tempfile

    from cleanfid.inception_torchscript import InceptionV3W

    p = Path(path)
    if not p.is_file():
        raise WeightsMissingError(f"clean-fid Inception weights {p} do not exist; run `aecli weights download "
                                  "--metrics fid --fid-backend clean-fid` on a machine with internet or pass "
                                  "--inception-weights FILE")
    import warnings

    try:
        warnings.filterwarnings("ignore", category=FutureWarning, module="torch.jit")  # "deprecated" notices
        if p.name == "inception-2015-12-05.pt":
            model = InceptionV3W(str(p.parent), download=False, resize_inside=resize_inside)
        else:
            with tempfile.TemporaryDirectory() as tmp:
                os.symlink(p.resolve(), Path(tmp) / "inception-2015-12-05.pt")
                model = InceptionV3W(tmp, download=False, resize_inside=resize_inside)
        model = model.eval().to(device)
        with torch.no_grad():  # the interface clean-fid relies on: [B, 2048] features of a 299² input
            out = model(torch.zeros(1, 3, CLEAN_FID_SIZE, CLEAN_FID_SIZE, device=device))
        if tuple(out.shape) != (1, 2048):
            raise ValueError(f"features of shape {tuple(out.shape)}")
    except (RuntimeError, OSError, ValueError, AttributeError) as exc:
        raise WeightsMissingError(f"clean-fid Inception weights {p} cannot be loaded ({str(exc).splitlines()[0][:160]}"
                                  "); give clean-fid's inception-2015-12-05.pt (TorchScript)") from None
    return model


# -- an offline stand-in for clean-fid's file ----------------------------------------------------------
def tf1_resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize as TensorFlow 1.x does it (align_corners=False, no half-pixel centres: source
    coordinate = output index × in/out), in TorchScript-compatible ops."""
    h, w = x.shape[-2], x.shape[-1]
    ys = torch.arange(size, dtype=torch.float64, device=x.device) * (h / size)
    xs = torch.arange(size, dtype=torch.float64, device=x.device) * (w / size)
    y0, x0 = ys.floor().long(), xs.floor().long()
    y1, x1 = (y0 + 1).clamp(max=h - 1), (x0 + 1).clamp(max=w - 1)
    wy = (ys - y0.double()).to(x.dtype).view(-1, 1)
    wx = (xs - x0.double()).to(x.dtype).view(1, -1)
    rows0, rows1 = x.index_select(2, y0), x.index_select(2, y1)
    top = rows0.index_select(3, x0) * (1 - wx) + rows0.index_select(3, x1) * wx
    bottom = rows1.index_select(3, x0) * (1 - wx) + rows1.index_select(3, x1) * wx
    return top * (1 - wy) + bottom * wy


class _InceptionTrunk(torch.nn.Module):
    """torch-fidelity's FeatureExtractorInceptionV3 after its resize and normalisation, up to pool3."""

    BLOCKS = ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "MaxPool_1", "Conv2d_3b_1x1", "Conv2d_4a_3x3",
              "MaxPool_2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
              "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c", "AvgPool")

    def __init__(self, fe: Any) -> None:
        super().__init__()
        self.blocks = torch.nn.Sequential(*[getattr(fe, n) for n in self.BLOCKS])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.blocks(x), 1)


class _CleanFidStandIn(torch.nn.Module):
    """NVIDIA's TorchScript Inception interface, as clean-fid's InceptionV3W calls it."""

    def __init__(self, layers: torch.nn.Module) -> None:
        super().__init__()
        self.layers = layers

    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        return self.layers((tf1_resize(x, 299) - 128) / 128)


def save_random_clean_fid_inception(path: str | os.PathLike[str], torch_fidelity_weights: str | os.PathLike[str]
                                    ) -> Path:
    """Write a TorchScript stand-in for clean-fid's ``inception-2015-12-05.pt`` that holds the network of
    a torch-fidelity weights file (e.g. one ``aecli.weights.save_random_inception`` wrote), for tests and
    benchmarks without internet. ``layers`` maps a normalised 299² batch to [B, 2048] pool3 features;
    ``forward(x, return_features)`` takes [0, 255] images of any size, resizes like TF1 and normalises.
    Both backends then run the same network, so their numbers differ only by their protocols.
    """
    import warnings

    trunk = _InceptionTrunk(load_inception(torch_fidelity_weights, "cpu")).eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation notices
        layers = torch.jit.trace(trunk, torch.zeros(1, 3, CLEAN_FID_SIZE, CLEAN_FID_SIZE), check_trace=False)
        torch.jit.script(_CleanFidStandIn(layers)).save(str(path))
    return Path(path)

