"""Latent-space tools: batched encoding and decoding, a Gaussian fit to a set of latents, lerp/slerp,
and latent files (safetensors, with the input names in the metadata; docs/latents-format.md).

"The latent" of an image is the one the decoder sees for it: the posterior mean for VAEs, the code for
plain AEs, and for flow-vae the mean pushed through the planar flows (its prior lives in that space,
so interpolating or sampling there matches what the decoder was trained on).
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from aecli.atomic import atomic_path
from aecli.data import to_model_input
from aecli.errors import DataError, UsageError
from aecli.inference.common import batches
from aecli.progress import Progress

LATENTS_FORMAT = "aecli-latents"
LATENTS_FORMAT_VERSION = 1  # files without the key (older aecli) read as version 1
METHODS = ("lerp", "slerp")
FIT_KINDS = ("auto", "diag", "full")
FULL_COV_MAX_DIM = 2048  # above this a D×D covariance costs too much memory/time: diagonal instead


def decoder_latent(model: Any, x: torch.Tensor) -> torch.Tensor:
    """The latent the decoder sees for model-range images ``x`` (deterministic: the posterior mean)."""
    z, _ = model.transform_latent(model.encode(x).mode())
    return z


@torch.no_grad()
def encode_images(model: Any, data: Any, value_range: Sequence[float], *, batch_size: int = 64,
                  device: torch.device | str = "cpu", progress: bool = False,
                  description: str = "encoding", posterior_mean: bool = False) -> torch.Tensor:
    """Latents of every image of an ImageSet, float32 on the CPU, shape [N, *model.latent_shape].

    ``posterior_mean``: the encoder's own mean, before any flow (what `aecli tsne` maps); otherwise
    the latent the decoder sees (see the module docstring).
    """
    device = torch.device(device)
    out = torch.empty((len(data), *model.latent_shape), dtype=torch.float32)
    start = 0
    with Progress(len(data), description, enabled=progress, min_total=2048) as bar:
        for x_u8, _ in batches(data, batch_size, device):
            x = to_model_input(x_u8, tuple(value_range))
            z = model.encode(x).mode() if posterior_mean else decoder_latent(model, x)
            out[start : start + len(z)] = z.float().cpu()
            start += len(z)
            bar.advance(len(z))
    return out


@torch.no_grad()
def decode_latents(model: Any, z: torch.Tensor, spec: Any, labels: torch.Tensor | None = None, *,
                   batch_size: int = 64) -> torch.Tensor:
    """Decode latents in batches on the model's device → images in [0, 1], float32 on the CPU."""
    device = next(model.parameters()).device
    parts = []
    for a in range(0, len(z), max(1, batch_size)):
        zb = z[a : a + batch_size].to(device)
        lb = labels[a : a + batch_size].to(device) if labels is not None else None
        parts.append(spec.to_unit_range(model.decode(zb, lb).float()).cpu())
    return torch.cat(parts) if parts else torch.empty(0)


# -- interpolation -------------------------------------------------------------------------------------
def lerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """(1 - t)·a + t·b; written this way so t = 0 and t = 1 give a and b exactly."""
    return (1.0 - t) * a + t * b


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation of two latents (any shape, treated as one vector), in float64.

    Gaussian latents concentrate near a sphere: slerp keeps the norm of intermediate points typical,
    where lerp passes through low-norm (atypical) codes. Nearly (anti)parallel vectors fall back to lerp.
    """
    a64, b64 = a.double().flatten(), b.double().flatten()
    na, nb = a64.norm(), b64.norm()
    if na == 0 or nb == 0:
        return lerp(a, b, t)
    cos = torch.clamp(torch.dot(a64 / na, b64 / nb), -1.0, 1.0)
    omega = torch.arccos(cos)
    so = torch.sin(omega)
    if so.abs() < 1e-6:
        return lerp(a, b, t)
    out = (torch.sin((1.0 - t) * omega) / so) * a64 + (torch.sin(t * omega) / so) * b64
    return out.view_as(a).to(a.dtype)


def interpolate_latents(a: torch.Tensor, b: torch.Tensor, steps: int, method: str = "lerp") -> torch.Tensor:
    """``steps`` latents from a to b inclusive (t = 0, 1/(steps-1), …, 1), stacked: [steps, *a.shape]."""
    if method not in METHODS:
        raise UsageError(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
    if steps < 2:
        raise UsageError(f"--steps must be at least 2 (the two end points), got {steps}")
    fn = lerp if method == "lerp" else slerp
    return torch.stack([fn(a, b, i / (steps - 1)) for i in range(steps)])


# -- a Gaussian fitted to latents (sample --fit) ---------------------------------------------------------
@dataclass
class GaussianFit:
    """N(mean, Σ) over flattened latents; Σ diagonal (``scale`` = std, [D]) or full (``scale`` = its
    Cholesky factor L, [D, D])."""

    kind: str  # "diag" | "full"
    mean: torch.Tensor  # [D] float64
    scale: torch.Tensor
    shape: tuple[int, ...]  # the latent shape to give samples back in
    count: int  # number of latents it was fitted on

    def transform(self, eps: torch.Tensor) -> torch.Tensor:
        """Map standard-normal draws [n, *shape] to this Gaussian (float32, same shape)."""
        e = eps.double().flatten(1)
        z = self.mean + (e * self.scale if self.kind == "diag" else e @ self.scale.T)
        return z.view(len(eps), *self.shape).float()

    def describe(self) -> str:
        what = "diagonal" if self.kind == "diag" else "full-covariance"
        return f"{what} Gaussian fitted to {self.count} latents ({self.mean.numel()} dimensions)"


def fit_gaussian(latents: torch.Tensor, kind: str = "auto") -> GaussianFit:
    """Fit N(mean, Σ) to latents [N, *shape]. ``auto``: full covariance when D ≤ 2048 and N > D (enough
    samples for a non-singular estimate), else diagonal."""
    if kind not in FIT_KINDS:
        raise UsageError(f"--fit-kind must be one of {', '.join(FIT_KINDS)}, got {kind!r}")
    n = len(latents)
    if n < 2:
        raise DataError(f"fitting a Gaussian needs at least 2 images, got {n}; give more --fit data")
    x = latents.double().flatten(1)
    d = x.shape[1]
    if kind == "auto":
        kind = "full" if d <= FULL_COV_MAX_DIM and n > d else "diag"
    mean = x.mean(0)
    if kind == "diag":
        return GaussianFit("diag", mean, x.std(0, unbiased=True), tuple(latents.shape[1:]), n)
    if d > 4 * FULL_COV_MAX_DIM:
        raise UsageError(f"a full covariance over {d} latent dimensions is too large; use --fit-kind diag")
    xc = x - mean
    cov = xc.T @ xc / (n - 1)
    # A small ridge keeps the Cholesky factorisation defined when N ≤ D or dimensions are dead.
    ridge = 1e-6 * float(cov.diagonal().mean().clamp_min(1e-12))
    chol = torch.linalg.cholesky(cov + ridge * torch.eye(d, dtype=cov.dtype))
    return GaussianFit("full", mean, chol, tuple(latents.shape[1:]), n)


# -- latent files --------------------------------------------------------------------------------------
def save_latents(path: str | os.PathLike[str], tensors: dict[str, torch.Tensor], names: Sequence[str],
                 metadata: dict[str, Any] | None = None) -> Path:
    """Write latents (and any companion tensors, e.g. labels) as safetensors, atomically; the input names
    and ``metadata`` are stored as JSON in the header, so plain ``safetensors`` reads everything."""
    p = Path(path)
    if p.suffix != ".safetensors":
        raise UsageError(f"--save-latents must end in .safetensors, got {path}")
    meta = {"format": LATENTS_FORMAT, "format_version": str(LATENTS_FORMAT_VERSION), "names": json.dumps(list(names)),
            **{k: json.dumps(v) for k, v in (metadata or {}).items()}}
    with atomic_path(p) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp), metadata=meta)
    return p


def load_latents(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], list[str], dict[str, Any]]:
    """(tensors, names, other metadata) of a file written by ``save_latents`` or `aecli encode`."""
    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            meta = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except (SafetensorError, OSError) as exc:
        raise DataError(f"{path} is not a readable latents file ({exc})") from None
    if meta.get("format") != LATENTS_FORMAT:
        raise DataError(f"{path} is not an aecli latents file (written by `aecli encode` or --save-latents)")
    _check_version(path, meta)
    names = json.loads(meta.pop("names", "[]"))
    meta.pop("format")
    return tensors, names, {k: json.loads(v) for k, v in meta.items()}


def _check_version(path: str | os.PathLike[str], meta: dict[str, str]) -> None:
    version = meta.pop("format_version", "1")
    if not version.isdigit() or int(version) > LATENTS_FORMAT_VERSION:
        raise DataError(f"{path} is a latents file of format version {version}, newer than this aecli reads "
                        f"({LATENTS_FORMAT_VERSION}); upgrade aecli")


def read_tensor_file(path: str | os.PathLike[str], key: str | None = None
                     ) -> tuple[dict[str, torch.Tensor], list[str], dict[str, Any]]:
    """Latents for `aecli decode`: an aecli latents file, or any safetensors / .npy file holding one
    tensor (or ``key``) of latents. Returns (tensors, names, metadata); the tensors hold "latents"
    (float) or, for VQ families, only "indices" (integer code maps)."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"latents file {p} does not exist; check the path")
    if p.suffix.lower() == ".npy":
        if key is not None:
            raise UsageError(f"{p} is a .npy file with one unnamed array; drop --key {key}")
        try:
            array = np.load(p, allow_pickle=False)  # never unpickle a user file
        except (ValueError, OSError) as exc:
            raise DataError(f"{p} is not a readable .npy array ({str(exc)[:120]})") from None
        t = torch.from_numpy(np.ascontiguousarray(array))
        return {"latents" if t.is_floating_point() else "indices": t}, [], {}
    try:
        with safe_open(str(p), framework="pt", device="cpu") as fh:
            meta, keys = fh.metadata() or {}, list(fh.keys())
    except (SafetensorError, OSError) as exc:
        raise DataError(f"{p} is neither a safetensors file nor a .npy array ({str(exc)[:120]})") from None
    if meta.get("format") == LATENTS_FORMAT:
        tensors, names, other = load_latents(p)
    else:
        with safe_open(str(p), framework="pt", device="cpu") as fh:
            tensors = {k: fh.get_tensor(k) for k in keys}
        names, other = [], {}
    if key is not None:
        if key not in tensors:
            raise UsageError(f"{p} has no tensor {key!r}; it holds {', '.join(sorted(tensors)) or 'none'}")
        t = tensors.pop(key)
        tensors.pop("latents" if t.is_floating_point() else "indices", None)
        tensors["latents" if t.is_floating_point() else "indices"] = t
    elif "latents" not in tensors and "indices" not in tensors:
        floats = [k for k, v in tensors.items() if v.is_floating_point()]
        ints = [k for k, v in tensors.items() if not v.is_floating_point() and k != "labels"]
        if not floats and len(ints) == 1:  # integer codes of a VQ model
            tensors["indices"] = tensors.pop(ints[0])
        elif len(floats) != 1:
            raise UsageError(f"{p} holds {len(floats)} float tensors ({', '.join(sorted(floats))}); "
                             "name the one to decode with --key")
        tensors["latents"] = tensors.pop(floats[0])
    return tensors, names, other


# -- streaming concatenation (encode's shards → one file) -----------------------------------------------
def _st_dtype(t: torch.Tensor) -> str:
    return {torch.float32: "F32", torch.float64: "F64", torch.float16: "F16", torch.bfloat16: "BF16",
            torch.int64: "I64", torch.int32: "I32", torch.uint8: "U8"}[t.dtype]


def concat_shards(path: str | os.PathLike[str], shards: Sequence[Path], keys: Sequence[str],
                  metadata: dict[str, str]) -> Path:
    """Write one safetensors file whose tensor ``k`` is the shards' ``k`` concatenated along dim 0.

    Streams one shard tensor at a time (a set of millions of latents never has to fit in memory);
    the layout is plain safetensors (8-byte header length, JSON header padded to 8 bytes, raw
    little-endian data), so any safetensors reader opens the result.
    """
    def shard_tensor(shard: Path, key: str) -> torch.Tensor:
        with safe_open(str(shard), framework="pt", device="cpu") as fh:
            return fh.get_tensor(key)

    header: dict[str, Any] = {}
    offset = 0
    for key in keys:
        first = shard_tensor(shards[0], key)
        rows = 0
        for shard in shards:
            with safe_open(str(shard), framework="pt", device="cpu") as fh:
                rows += fh.get_slice(key).get_shape()[0]
        shape = [rows, *first.shape[1:]]
        size = first.element_size() * int(torch.Size(shape).numel())
        header[key] = {"dtype": _st_dtype(first), "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    header["__metadata__"] = metadata
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    with atomic_path(path) as tmp, open(tmp, "wb") as out:
        out.write(struct.pack("<Q", len(raw)))
        out.write(raw)
        for key in keys:
            for shard in shards:
                t = shard_tensor(shard, key).contiguous()
                out.write(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return Path(path)
