"""`aecli reconstruct`: reconstructions of the same inputs by one or more checkpoints (seed 001 Q3's
ground truth / AE / VAE figure), one PNG per input and per checkpoint, plus optional latents."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from aecli.atomic import check_writable
from aecli.data import open_for, to_model_input
from aecli.data.identity import source_key
from aecli.data.sources import SPLIT_CHOICES
from aecli.devices import resolve_device
from aecli.errors import DataError, UsageError
from aecli.images import save_grid, save_png
from aecli.inference.common import (
    batches, checkpoint_labels, inside, labels_for, load_for, parse_class, precheck, tty, unique_output_names,
)
from aecli.inference.latents import save_latents as write_latents
from aecli.metrics.reconstruction import psnr
from aecli.progress import Progress

COMPARISON = "comparison.png"


@dataclass
class ReconstructResult:
    out: Path
    comparison: Path
    names: list[str]  # the inputs, in output order
    files: dict[str, list[Path]] = field(default_factory=dict)  # checkpoint label → one PNG per input
    psnr: dict[str, float] = field(default_factory=dict)  # checkpoint label → mean PSNR (dB) vs. the input
    latents: Path | None = None
    data_line: str = ""  # which source, split rule and N (aecli.data.sources.Provenance)


def select_images(data: Any, n: int | None, random: bool, seed: int) -> Any:
    """The first ``n`` items, or ``n`` items drawn with ``seed`` (kept in dataset order)."""
    if n is None or n >= len(data):
        return data
    if random:
        g = torch.Generator().manual_seed(seed)
        return data.subset(torch.randperm(len(data), generator=g)[:n].sort().values)
    return data.subset(torch.arange(n))


def check_input_size(model: Any, size: int, channels: int, path: str | os.PathLike[str]) -> None:
    """A trial forward pass at ``size`` px: a model that cannot take it gets a clear error, not a crash."""
    if size == model.config.image_size:
        return
    device = next(model.parameters()).device
    labels = torch.zeros(1, dtype=torch.int64, device=device) if model.is_conditional else None
    try:
        with torch.no_grad():
            y = model(torch.zeros(1, channels, size, size, device=device), labels, sample_posterior=False).recon
        ok = tuple(y.shape[-2:]) == (size, size)
    except (RuntimeError, ValueError):
        ok = False
    if not ok:
        raise UsageError(f"{path}: this {model.family} model (trained at {model.config.image_size} px) cannot "
                         f"take {size} px inputs; drop --image-size so inputs are resized to "
                         f"{model.config.image_size} px")


def _grid_rows(rows: list[torch.Tensor]) -> torch.Tensor:
    """Rows of images that may differ in size/channels (checkpoints of different specs) → one batch."""
    size = max(r.shape[-1] for r in rows)
    channels = max(r.shape[1] for r in rows)
    fixed = []
    for r in rows:
        if r.shape[-1] != size:
            r = F.interpolate(r, size=(size, size), mode="bilinear", align_corners=False)
        if r.shape[1] != channels:
            r = r.expand(-1, channels, -1, -1)
        fixed.append(r)
    return torch.cat(fixed)


@torch.no_grad()
def reconstruct(
    checkpoints: Sequence[str | os.PathLike[str]], data: str | Sequence[str] | None, out: str | os.PathLike[str], *,
    n: int | None = None, random: bool = False, seed: int = 0, split: str = "auto", batch_size: int = 64,
    device: str = "auto", save_latents: str | os.PathLike[str] | None = None, image_size: int | None = None,
    class_name: str | None = None, ema: bool = False, grid_n: int = 16, data_root: str | None = None,
    progress: bool = True, tile_size: int | None = None,
) -> ReconstructResult:
    """Reconstruct images from ``data`` (folder, files, dataset name; None: the checkpoints' training
    source) with every checkpoint. ``split`` of a source is made as training made it when the source is
    the checkpoint's training data (aecli.data.open_for).

    Writes ``out/<input name>.png`` (one checkpoint) or ``out/<checkpoint>/<input name>.png`` (several),
    and ``out/comparison.png``: the first ``grid_n`` inputs in row 1 ("ground truth"), then one row per
    checkpoint, labelled with its name; tiles shown ``tile_size`` px (see aecli.images.tile_size_for).
    """
    out_dir = _check_options(checkpoints, out, split, n, grid_n, image_size, save_latents)
    dev = resolve_device(device)
    headers = [precheck(p, "reconstruct", encoder=True) for p in checkpoints]
    labels_out = checkpoint_labels(checkpoints)
    sets, keys = _open_inputs(checkpoints, headers, data, image_size=image_size, split=split, n=n, random=random,
                              seed=seed, data_root=data_root, progress=progress)
    first = sets[keys[0]]
    names = list(first.names)
    out_names = unique_output_names(names)
    shown = min(grid_n, len(names))
    result = ReconstructResult(out=out_dir, comparison=out_dir / COMPARISON, names=names,
                               data_line=first.provenance.line(len(first)))
    grid_rows = [first.take(torch.arange(shown)).float() / 255.0]
    latent_tensors: dict[str, torch.Tensor] = {}
    meta_ckpts = []
    with Progress(len(names) * len(checkpoints), "reconstructing", enabled=progress, min_total=256) as bar:
        for path, header, label, key in zip(checkpoints, headers, labels_out, keys):
            ckpt = load_for(path, dev, "reconstruct", ema=ema, encoder=True)
            target = out_dir if len(checkpoints) == 1 else out_dir / label
            run = _Run(ckpt, sets[key], class_name, path, dev)
            files, psnrs, row, latents = run.write(target, out_names, shown, batch_size, save_latents is not None, bar)
            result.files[label], result.psnr[label] = files, float(psnrs.mean())
            grid_rows.append(row)
            suffix = "" if len(checkpoints) == 1 else f".{label}"
            latent_tensors.update({name + suffix: t for name, t in latents.items()})
            meta_ckpts.append({"label": label, "path": str(path), "family": header.family,
                               "latent_shape": list(ckpt.model.latent_shape)})
            del ckpt, run
    save_grid(_grid_rows(grid_rows), result.comparison, shown, row_labels=["ground truth", *labels_out],
              tile_size=tile_size)
    if save_latents is not None:
        latent_tensors["labels"] = first.labels.clone()
        result.latents = write_latents(save_latents, latent_tensors, names, {
            "checkpoints": meta_ckpts, "source": first.provenance.source, "split": split,
            "data": first.provenance.to_dict(len(first)), "latent": "decoder-side latent (posterior mean, after flows for flow-vae)",
        })
    return result


def _check_options(checkpoints: Sequence[Any], out: str | os.PathLike[str], split: str, n: int | None, grid_n: int,
                   image_size: int | None, save_latents: str | os.PathLike[str] | None) -> Path:
    """Refuse bad options before any checkpoint or image is read; returns the output folder."""
    if not checkpoints:
        raise UsageError("give at least one checkpoint")
    if split not in SPLIT_CHOICES:
        raise UsageError(f"--split must be one of {', '.join(SPLIT_CHOICES)}, got {split!r}")
    if n is not None and n < 1:
        raise UsageError(f"--n must be at least 1, got {n}")
    if grid_n < 1:
        raise UsageError(f"--grid-columns must be at least 1, got {grid_n}")
    if image_size is not None and image_size < 1:
        raise UsageError(f"--image-size must be positive, got {image_size}")
    out_dir = check_writable(out)
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"--out {out} is a file; give a folder")
    if save_latents is not None and not str(save_latents).endswith(".safetensors"):
        raise UsageError(f"--save-latents must end in .safetensors, got {save_latents}")
    return out_dir


def _open_inputs(checkpoints: Sequence[str | os.PathLike[str]], headers: Sequence[Any],
                 data: str | Sequence[str] | None, *, image_size: int | None, split: str, n: int | None,
                 random: bool, seed: int, data_root: str | None, progress: bool) -> tuple[dict[Any, Any], list[Any]]:
    """The inputs, decoded once per distinct (size, channels, split rule) among the checkpoints:
    (sets by key, each checkpoint's key). Every set holds the same images, or this refuses."""
    if not data:  # each checkpoint defaults to its training source: they must agree, or rows would
        # compare reconstructions of different images
        defaults = {source_key(h.data.default_source(p)): h.data.source for p, h in zip(checkpoints, headers)}
        if len(defaults) > 1:
            raise UsageError(f"the checkpoints were trained on different data ({', '.join(defaults.values())}); "
                             "pass --data SRC to reconstruct the same images with each")
    sets: dict[tuple[Any, ...], Any] = {}
    keys = []
    for path, h in zip(checkpoints, headers):
        rule = tuple(sorted(h.data.split_options(data or h.data.default_source(path)).items()))
        key = (image_size or h.data.image_size, h.data.channels, rule)
        keys.append(key)
        if key not in sets:
            opened = open_for(h.data, data, checkpoint=path, image_size=image_size, split=split,
                              data_root=data_root, limit=None if random else n, progress=tty(progress))
            sets[key] = select_images(opened, n, random, seed)
    names = list(sets[keys[0]].names)
    rules = {s.provenance.rule for s in sets.values()}
    if len(rules) > 1:
        raise UsageError(f"the checkpoints hold out different validation images of this data ({'; '.join(sorted(rules))}); "
                         "use --split all, or reconstruct with one checkpoint at a time")
    if any(list(s.names) != names for s in sets.values()):
        raise DataError("the inputs decoded differently at the checkpoints' sizes (an unreadable file?); "
                        "reconstruct with checkpoints of one image size at a time")
    return sets, keys


class _Run:
    """One checkpoint reconstructing the inputs."""

    def __init__(self, ckpt: Any, data: Any, class_name: str | None, path: str | os.PathLike[str],
                 device: torch.device) -> None:
        self.model, self.spec, self.data, self.device = ckpt.model, ckpt.data, data, device
        check_input_size(self.model, data.image_size, self.spec.channels, path)
        if class_name is not None and not self.model.is_conditional:
            raise UsageError(f"--class needs a conditional checkpoint; {path} is not conditional")
        self.class_index = parse_class(class_name, self.spec.class_names, self.model.config.num_classes)

    def write(self, target: Path, out_names: list[str], shown: int, batch_size: int, keep_latents: bool,
              bar: Any) -> tuple[list[Path], torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """One PNG per input under ``target`` → (files, PSNR per image, the grid row of the first
        ``shown``, {"latents", "logvar"} when ``keep_latents``)."""
        files: list[Path] = []
        psnrs, row, zs, logvars = [], [], [], []
        for x_u8, y in batches(self.data, batch_size, self.device):
            labels = labels_for(self.model, len(x_u8), self.class_index, y, self.device)
            res = self.model(to_model_input(x_u8, self.spec.value_range), labels, sample_posterior=False)
            recon = self.spec.to_unit_range(res.recon.float())
            psnrs.append(psnr(recon, x_u8.float() / 255.0).cpu())
            recon = recon.cpu()
            for img in recon:
                dest = inside(target, out_names[len(files)])
                save_png(img, dest)
                files.append(dest)
            row.append(recon[: max(0, shown - sum(len(r) for r in row))])
            if keep_latents:
                zs.append(res.z.float().cpu())
                if hasattr(res.posterior, "logvar"):
                    logvars.append(res.posterior.logvar.float().cpu())
            bar.advance(len(x_u8))
        latents = {"latents": torch.cat(zs)} if keep_latents else {}
        if logvars:
            latents["logvar"] = torch.cat(logvars)
        return files, torch.cat(psnrs), torch.cat(row), latents
