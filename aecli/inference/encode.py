"""`aecli encode` and `aecli decode`: a data set's latents in one file (the first stage of a latent
diffusion model), and images back from such a file.

Encoding is written in shards (``OUT.parts/00000.safetensors``, …) so a killed job resumes where it
stopped; the last step streams the shards into the one output file and removes them. The file
(docs/latents-format.md) holds the posterior mean (``latents``), the log-variance for VAEs
(``logvar``), the class labels, the image names, and the LDM scale factor and shift:
``1 / std`` and the mean over every element of posterior samples of the whole set — what latent
diffusion's ``scale_by_std`` computes on its first batch, here over all of it.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from aecli.atomic import atomic_path, remove_stale_temps, write_text
from aecli.checkpoint.format import LATENT_SCALE_KEY, set_metadata
from aecli.data import open_for, to_model_input
from aecli.devices import resolve_device
from aecli.errors import DataError, UsageError
from aecli.hashing import sha256_file
from aecli.images import save_png
from aecli.inference.common import (
    batches, inside, labels_for, load_for, parse_class, precheck, tty, unique_output_names,
)
from aecli.inference.latents import LATENTS_FORMAT, LATENTS_FORMAT_VERSION, concat_shards, read_tensor_file
from aecli.progress import Progress

MANIFEST = "manifest.json"
STATISTIC = ("1/std and mean over every element of posterior samples (seeded) of the whole set, "
             "as latent diffusion's scale_by_std; scaled = (z - shift) * scale")


@dataclass
class EncodeResult:
    out: Path
    count: int
    latent_shape: tuple[int, ...]
    scale_factor: float | None
    shift_factor: float
    resumed_shards: int  # shards found complete on disk and not recomputed
    data_line: str = ""  # which source, split rule and N (aecli.data.sources.Provenance)
    written_to_checkpoint: bool = False


@dataclass
class DecodeResult:
    out: Path
    files: list[Path]
    unscaled: bool  # the latents were divided by the scale factor (and shifted back) first


class _Moments:
    """Count, mean and sum of squared deviations, merged across shards (Chan et al.), in float64."""

    def __init__(self, n: int = 0, mean: float = 0.0, m2: float = 0.0) -> None:
        self.n, self.mean, self.m2 = n, mean, m2

    def add(self, x: torch.Tensor) -> None:
        x = x.double().flatten()
        other = _Moments(x.numel(), float(x.mean()), float((x - x.mean()).pow(2).sum()))
        self.merge(other)

    def merge(self, o: "_Moments") -> None:
        if o.n == 0:
            return
        n = self.n + o.n
        delta = o.mean - self.mean
        self.mean += delta * o.n / n
        self.m2 += o.m2 + delta * delta * self.n * o.n / n
        self.n = n

    def std(self) -> float:
        return math.sqrt(self.m2 / (self.n - 1)) if self.n > 1 else 0.0

    def to_dict(self) -> dict[str, float]:
        return {"n": self.n, "mean": self.mean, "m2": self.m2}


def parts_dir(out: Path) -> Path:
    return out.with_name(out.name + ".parts")


def _shard_name(i: int) -> str:
    return f"{i:05d}.safetensors"


def _read_shard(path: Path, names: list[str]) -> _Moments | None:
    """The moments of a complete shard whose names match the data's, else None (recompute it)."""
    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            meta = fh.metadata() or {}
        if json.loads(meta["names"]) != names:
            raise DataError(f"{path} was encoded from other images than the data gives now; the data changed "
                            f"since the shards were written — delete {path.parent} to start over")
        return _Moments(**json.loads(meta["moments"]))
    except (SafetensorError, OSError, KeyError, ValueError, TypeError):
        return None  # a shard cut by a kill cannot exist (atomic writes), but a foreign file might


@torch.no_grad()
def encode(
    checkpoint: str | os.PathLike[str], data: str | Sequence[str] | None, out: str | os.PathLike[str], *,
    split: str = "all", n: int | None = None, batch_size: int = 64, shard_size: int = 8192,
    device: str = "auto", ema: bool = False, seed: int = 0, data_root: str | None = None,
    cache: str | None = None, scale_to_checkpoint: bool = False, progress: bool = True,
) -> EncodeResult:
    """Encode every image of ``data`` (None: the checkpoint's training data) with ``checkpoint`` into
    ``out`` (.safetensors); see the module doc. ``split`` defaults to all: a latent-diffusion model is
    usually trained on every image (``train``/``val`` split the training data by its own rule)."""
    out_path = Path(out)
    if out_path.suffix != ".safetensors":
        raise UsageError(f"--out must end in .safetensors, got {out}")
    if out_path.is_dir():
        raise UsageError(f"--out {out} is a folder; give a .safetensors file name")
    for name, value in (("--n", n), ("--batch-size", batch_size), ("--shard-size", shard_size)):
        if value is not None and value < 1:
            raise UsageError(f"{name} must be at least 1, got {value}")
    header = precheck(checkpoint, "encode", encoder=True)
    dev = resolve_device(device)
    ds = open_for(header.data, data, checkpoint=checkpoint, split=split, limit=n, data_root=data_root,
                  cache_dir=cache, progress=tty(progress))
    if len(ds) == 0:
        raise DataError(f"{ds.provenance.source} ({split}) holds no images to encode")
    ckpt = load_for(checkpoint, dev, "encode", ema=ema, encoder=True)
    latent_shape = tuple(ckpt.model.latent_shape)
    # The settings a shard depends on: a rerun with other settings must not reuse them.
    settings = {"checkpoint_sha256": sha256_file(checkpoint), "ema": ema, "source": ds.provenance.source,
                "split": ds.provenance.split, "rule": ds.provenance.rule,
                "n": len(ds), "shard_size": shard_size, "seed": seed, "latent_shape": list(latent_shape)}
    parts = _parts_for(out_path, settings)
    shards, moments, resumed = _encode_shards(ckpt, ds, parts, shard_size, batch_size, seed, dev, progress)
    with safe_open(str(shards[0]), framework="pt", device="cpu") as fh:
        keys = [k for k in ("latents", "logvar", "indices", "labels") if k in fh.keys()]
    std = moments.std()
    scale = 1.0 / std if std > 0 else None
    checkpoint_entry = {"path": str(checkpoint), "family": header.family, "sha256": settings["checkpoint_sha256"],
                        "ema": ema}
    concat_shards(out_path, shards, keys, _latents_metadata(ds, ckpt.data, checkpoint_entry, latent_shape,
                                                              scale, moments, seed))
    shutil.rmtree(parts, ignore_errors=True)
    result = EncodeResult(out_path, len(ds), latent_shape, scale, moments.mean, resumed,
                          ds.provenance.line(len(ds)))
    if scale_to_checkpoint:
        if scale is None:
            raise DataError("the latents have zero variance, so there is no scale factor to write")
        set_metadata(checkpoint, LATENT_SCALE_KEY, {
            "scale_factor": scale, "shift_factor": moments.mean, "source": ds.provenance.source,
            "split": ds.provenance.split, "n": len(ds), "elements": moments.n, "seed": seed, "how": STATISTIC})
        result.written_to_checkpoint = True
    return result


def _parts_for(out_path: Path, settings: dict[str, Any]) -> Path:
    """The shard folder of ``out_path``, holding only shards of an encoding with ``settings``."""
    parts = parts_dir(out_path)
    manifest = parts / MANIFEST
    if manifest.exists():
        try:
            old = json.loads(manifest.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            old = None
        if old != settings:
            raise UsageError(f"{parts} holds shards of another encoding (other checkpoint, data or options); "
                             "delete it or use another --out")
    parts.mkdir(parents=True, exist_ok=True)
    write_text(manifest, json.dumps(settings, indent=2))
    remove_stale_temps(parts)  # temp files of a write a kill interrupted
    return parts


def _encode_shards(ckpt: Any, ds: Any, parts: Path, shard_size: int, batch_size: int, seed: int,
                   device: torch.device, progress: bool) -> tuple[list[Path], _Moments, int]:
    """Write every shard ``parts`` lacks → (all shard paths, moments of the whole set, shards resumed)."""
    shard_count = math.ceil(len(ds) / shard_size)
    moments, resumed = _Moments(), 0
    with Progress(len(ds), "encoding", enabled=progress, min_total=2048) as bar:
        for s in range(shard_count):
            lo, hi = s * shard_size, min(len(ds), (s + 1) * shard_size)
            names = list(ds.names[lo:hi])
            path = parts / _shard_name(s)
            done = _read_shard(path, names) if path.exists() else None
            if done is None:
                gen = torch.Generator().manual_seed(seed * 1_000_003 + s)  # per shard: resume-independent
                tensors, done = _encode_shard(ckpt, ds.subset(torch.arange(lo, hi)), batch_size, gen, device, bar)
                with atomic_path(path) as tmp:
                    save_file(tensors, str(tmp), metadata={"names": json.dumps(names),
                                                           "moments": json.dumps(done.to_dict())})
            else:
                resumed += 1
                bar.advance(hi - lo)
            moments.merge(done)
    return [parts / _shard_name(s) for s in range(shard_count)], moments, resumed


def _encode_shard(ckpt: Any, shard: Any, batch_size: int, gen: torch.Generator, device: torch.device,
                  bar: Any) -> tuple[dict[str, torch.Tensor], _Moments]:
    """One shard's tensors (posterior means, log-variances, VQ code maps, labels) and the moments of
    its posterior samples."""
    model, spec = ckpt.model, ckpt.data
    means, logvars, indices, moments = [], [], [], _Moments()
    for x_u8, _ in batches(shard, batch_size, device):
        posterior = model.encode(to_model_input(x_u8, spec.value_range))
        means.append(posterior.mode().float().cpu())
        if hasattr(posterior, "logvar"):
            logvars.append(posterior.logvar.float().cpu())
        if hasattr(model, "encode_indices"):  # VQ families: the integer code maps too
            indices.append(model.encode_indices(to_model_input(x_u8, spec.value_range)).long().cpu())
        moments.add(posterior.sample(gen).float())
        bar.advance(len(x_u8))
    tensors = {"latents": torch.cat(means), "labels": shard.labels.clone()}
    if logvars:
        tensors["logvar"] = torch.cat(logvars)
    if indices:
        tensors["indices"] = torch.cat(indices)
    latent_shape = tuple(model.latent_shape)
    if tuple(tensors["latents"].shape[1:]) != latent_shape:
        raise DataError(f"{ckpt.header.path}: the encoder gave latents of shape "
                        f"{tuple(tensors['latents'].shape[1:])}, the model declares {latent_shape}")
    return tensors, moments


def _latents_metadata(ds: Any, spec: Any, checkpoint: dict[str, Any], latent_shape: tuple[int, ...],
                      scale: float | None, moments: _Moments, seed: int) -> dict[str, str]:
    """The latents file's metadata (docs/latents-format.md)."""
    return {
        "format": LATENTS_FORMAT, "format_version": str(LATENTS_FORMAT_VERSION),
        "names": json.dumps(list(ds.names)),
        "checkpoint": json.dumps(checkpoint),
        "latent": json.dumps("posterior"),
        "latent_shape": json.dumps(list(latent_shape)),
        "scale_factor": json.dumps(scale), "shift_factor": json.dumps(moments.mean),
        "latent_stats": json.dumps({"std": moments.std(), "mean": moments.mean, "elements": moments.n,
                                    "seed": seed, "how": STATISTIC}),
        "source": json.dumps(ds.provenance.source), "split": json.dumps(ds.provenance.split),
        "provenance": json.dumps(ds.provenance.to_dict(len(ds))), "class_names": json.dumps(list(ds.class_names)),
        "data": json.dumps(spec.to_dict()),
    }


def _scale_from(meta: dict[str, Any], header: Any) -> tuple[float, float] | None:
    """(scale, shift) from the latents file, else the checkpoint's ``latent_scale`` metadata, else the
    family's own convention in its config (ldm-kl's ``scaling_factor``/``shift_factor``, e.g. SD's 0.18215)."""
    if meta.get("scale_factor"):
        return float(meta["scale_factor"]), float(meta.get("shift_factor") or 0.0)
    raw = header.metadata.get(LATENT_SCALE_KEY)
    if raw:
        entry = json.loads(raw)
        return float(entry["scale_factor"]), float(entry.get("shift_factor", 0.0))
    if "scaling_factor" in header.config:
        return float(header.config["scaling_factor"]), float(header.config.get("shift_factor") or 0.0)
    return None


def _what_to_decode(tensors: dict[str, torch.Tensor], model: Any, path: Any, scaled: bool
                    ) -> tuple[torch.Tensor, bool]:
    """(batch, is_codes): float latents [N, *latent_shape], or for VQ families integer code maps
    [N, h, w] (decoded by ``decode_indices``); anything else is a one-line error."""
    shape = tuple(model.latent_shape)
    if "latents" in tensors:
        z = tensors["latents"]
        z = z.unsqueeze(0) if z.dim() == len(shape) else z  # a single latent
        if not z.is_floating_point():
            raise UsageError(f"{path}: the latents are {z.dtype}, not floating point; decode needs float latents")
        if tuple(z.shape[1:]) != shape:
            raise UsageError(f"{path}: latents of shape {tuple(z.shape[1:])} do not fit this {model.family} "
                             f"checkpoint, which decodes {shape}; encode with the same checkpoint")
        return z, False
    if not hasattr(model, "decode_indices"):
        raise UsageError(f"{path} holds integer tensors, not latents; a {model.family} decodes float latents of "
                         f"shape {shape}")
    if scaled:
        raise UsageError("--scaled applies to float latents, not to integer code indices")
    idx = tensors["indices"]
    idx = idx.unsqueeze(0) if idx.dim() == len(shape) - 1 else idx
    if tuple(idx.shape[1:]) != shape[1:]:
        raise UsageError(f"{path}: code maps of shape {tuple(idx.shape[1:])} do not fit this {model.family} "
                         f"checkpoint, which decodes {shape[1:]}; encode with the same checkpoint")
    return idx, True


@torch.no_grad()
def decode(
    checkpoint: str | os.PathLike[str], latents: str | os.PathLike[str], out: str | os.PathLike[str], *,
    key: str | None = None, scaled: bool = False, class_name: str | None = None, batch_size: int = 64,
    device: str = "auto", ema: bool = False, progress: bool = True,
) -> DecodeResult:
    """Decode the latents in ``latents`` (an `aecli encode` file, or any safetensors/.npy tensor of
    shape [N, *latent_shape]) to one PNG per latent in ``out``, named like `aecli reconstruct`'s.

    Latents are posterior-space (as `aecli encode` writes them): flow-vae's flows are applied before the
    decoder, exactly as in reconstruction. ``scaled``: the latents were multiplied by the scale factor
    (as a diffusion model generates them); they are mapped back with z / scale + shift first.
    """
    out_dir = Path(out)
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"--out {out} is a file; give a folder")
    if batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {batch_size}")
    header = precheck(checkpoint, "decode", decoder=True)
    tensors, names, meta = read_tensor_file(latents, key)
    dev = resolve_device(device)
    ckpt = load_for(checkpoint, dev, "decode", ema=ema, decoder=True)
    model, spec = ckpt.model, ckpt.data
    z, codes = _what_to_decode(tensors, model, latents, scaled)
    # `reconstruct --save-latents` files hold decoder-side latents (after flow-vae's flows) already.
    decoder_side = str(meta.get("latent", "")).startswith("decoder-side")
    if scaled:
        found = _scale_from(meta, header)
        if found is None:
            raise UsageError(f"--scaled needs a scale factor: {latents} has none and {checkpoint} has none in its "
                             "metadata; run `aecli encode … --scale-to-checkpoint` once")
        scale, shift = found
        z = z / scale + shift
    z = z if codes else z.float()
    if names and len(names) != len(z):
        names = []
    if not names:
        width = max(6, len(str(len(z) - 1)))
        names = [f"{i:0{width}d}" for i in range(len(z))]
    labels = tensors.get("labels")
    class_index = parse_class(class_name, spec.class_names, model.config.num_classes)
    out_names = unique_output_names(names)
    files: list[Path] = []
    with Progress(len(z), "decoding", enabled=progress, min_total=2048) as bar:
        for a in range(0, len(z), batch_size):
            zb = z[a : a + batch_size].to(dev)
            lb = labels[a : a + batch_size] if labels is not None and len(labels) == len(z) else None
            y = labels_for(model, len(zb), class_index, lb, dev)
            if codes:
                images = spec.to_unit_range(model.decode_indices(zb).float()).cpu()
            else:
                zk = zb if decoder_side else model.transform_latent(zb)[0]
                images = spec.to_unit_range(model.decode(zk, y).float()).cpu()
            for i, img in enumerate(images):
                dest = inside(out_dir, out_names[a + i])
                save_png(img, dest)
                files.append(dest)
            bar.advance(len(zb))
    return DecodeResult(out_dir, files, scaled)
