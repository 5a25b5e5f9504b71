"""`aecli sample`: images from the prior (or from a Gaussian fitted to a plain AE's latents).

Image i is decoded from its own standard-normal draw, seeded by (seed, i). So the same seed gives the
same images whatever the batch size, the first n images of a grid and of a folder agree, and a folder
run that was interrupted is completed by rerunning it: files already there are skipped, the missing
ones come out exactly as they would have, and every PNG is written atomically (no half-written file).
A folder of 50,000 samples is written batch by batch; nothing but one batch is held in memory.
"""

from __future__ import annotations

import fnmatch
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from aecli.atomic import check_writable, remove_stale_temps, write_text
from aecli.data import open_for
from aecli.devices import resolve_device
from aecli.errors import UsageError
from aecli.images import grid_shape, save_grid, save_png
from aecli.inference.common import load_for, parse_class, precheck, tty, unique_output_names
from aecli.inference.latents import encode_images, fit_gaussian
from aecli.locking import FolderLock
from aecli.progress import Progress

MANIFEST = "aecli-sample.json"  # the settings a sample folder was made with; a rerun must match them
MAX_GRID_IMAGES = 4096  # one PNG; a folder takes any number (written batch by batch)
MAX_GRID_PIXELS = 2**27  # 134 Mpx: the grid is decoded in memory as float (0.5 GB per channel)


@dataclass
class SampleResult:
    out: Path
    kind: str  # "grid" (one PNG) or "folder" (one PNG per sample)
    count: int  # samples in the grid or the folder
    written: int  # files written by this call (folder); 1 for a grid
    skipped: int  # files already present and kept (folder)
    prior: str  # what was sampled from, e.g. "N(0, I) prior" or the fitted Gaussian
    rows: int = 1
    columns: int = 1
    data_line: str = ""  # --fit: which source, split rule and N the Gaussian was fitted to


def check_grid(count: int, image_size: int, what: str, fix: str) -> None:
    """Refuse a one-PNG grid too large to hold in memory, before anything is decoded."""
    if count > MAX_GRID_IMAGES or count * image_size**2 > MAX_GRID_PIXELS:
        limit = min(MAX_GRID_IMAGES, MAX_GRID_PIXELS // image_size**2)
        raise UsageError(f"{what} gives a grid of {count} images of {image_size} px, more than one PNG holds "
                         f"(at most {limit} at this size); {fix}")


def draw_eps(shape: Sequence[int], seed: int, indices: Sequence[int]) -> torch.Tensor:
    """Standard-normal draws [len(indices), *shape] on the CPU; draw i depends only on (seed, i).

    numpy's SeedSequence mixes the pair into a full-entropy state (torch's CPU generator keeps only 32
    bits of a seed, so packing (seed, i) into one torch seed would ignore the seed)."""
    out = np.empty((len(indices), *shape), dtype=np.float32)
    for row, i in enumerate(indices):
        out[row] = np.random.default_rng([seed % 2**64, int(i)]).standard_normal(tuple(shape), dtype=np.float32)
    return torch.from_numpy(out)


@dataclass
class _Plan:
    """Which latent draw, label and file each sample index gets. Computed per index, never listed: a
    folder of 10⁹ samples needs no list of 10⁹ names or labels."""

    n: int
    rows: int
    columns: int
    class_count: int = 0  # conditional models: labels cycle (or come per class) over this many
    class_index: int | None = None  # --class: every sample is this class
    per_class: int | None = None  # --per-class M: samples c·M … c·M+M-1 are class c, in dirs[c]
    dirs: Sequence[str] = ()
    row_labels: list[str] | None = None  # class names of a --per-class grid

    def label(self, i: int) -> int | None:
        if not self.class_count:
            return None
        if self.per_class is not None:
            return i // self.per_class
        return self.class_index if self.class_index is not None else i % self.class_count

    def name(self, i: int) -> str:
        """The file of sample i. Numbers are zero-padded to a fixed width that does not depend on --n
        (longer numbers simply grow), so a folder grown with a larger --n keeps every name it had."""
        if self.per_class is not None:
            return f"{self.dirs[i // self.per_class]}/sample_{i % self.per_class:04d}.png"
        return f"sample_{i:06d}.png"


def _plan(model: Any, n: int | None, class_index: int | None, per_class: int | None,
          class_names: Sequence[str], nrow: int | None) -> _Plan:
    k = model.config.num_classes if model.is_conditional else 0
    if per_class is not None:
        if not k:
            raise UsageError(f"--per-class needs a conditional checkpoint; this {model.family} is not conditional")
        if per_class < 1:
            raise UsageError(f"--per-class must be at least 1, got {per_class}")
        if class_index is not None:
            raise UsageError("give --class or --per-class, not both")
        # One folder per class, never shared: names that clean up alike ("a:b", "a_b") get "-1", "-2"…
        names_of = [class_names[c] if c < len(class_names) else str(c) for c in range(k)]
        dirs = unique_output_names([name.replace("/", "_").replace("\\", "_") for name in names_of], "")
        return _Plan(k * per_class, k, per_class, k, per_class=per_class, dirs=dirs, row_labels=names_of)
    if n is None or n < 1:
        raise UsageError(f"--n must be at least 1, got {n}")
    rows, columns = grid_shape(n, nrow)  # no empty cell unless --grid-columns asks for one
    # no class asked: labels cycle through the classes so every class shows up
    return _Plan(n, rows, columns, k, class_index=class_index)


def _check_manifest(folder: Path, settings: dict[str, Any]) -> None:
    path = folder / MANIFEST
    if path.exists():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            old = None
        if old != settings:
            raise UsageError(f"{folder} holds samples made with other settings ({path}); keeping them would mix "
                             "two sample sets — use another --out folder or delete this one")
    elif any(folder.glob("**/sample_*.png")):
        raise UsageError(f"{folder} already holds sample PNGs not made by `aecli sample`; use an empty folder")


@torch.no_grad()
def sample(
    checkpoint: str | os.PathLike[str], out: str | os.PathLike[str], *, n: int | None = 64,
    temperature: float = 1.0, seed: int = 0, class_name: str | None = None, per_class: int | None = None,
    fit: str | Sequence[str] | None = None, fit_kind: str = "auto", fit_n: int = 10_000, fit_split: str = "train",
    batch_size: int = 256, device: str = "auto", nrow: int | None = None, ema: bool = False,
    data_root: str | None = None, progress: bool = True, tile_size: int | None = None,
) -> SampleResult:
    """Sample a checkpoint into ``out``: a ``.png`` path gives one grid, anything else a folder of PNGs."""
    out_path, as_grid = _check_options(out, temperature, batch_size, nrow)
    needs = {"encoder": True, "decoder": True} if fit is not None else {"prior": True}
    needs["sampling"] = True
    command = "sample" if fit is None else "sample --fit"
    precheck(checkpoint, command, **needs)
    dev = resolve_device(device)
    ckpt = load_for(checkpoint, dev, command, ema=ema, **needs)
    model, spec = ckpt.model, ckpt.data
    class_index = parse_class(class_name, spec.class_names, model.config.num_classes if model.is_conditional else 0)
    plan = _plan(model, n, class_index, per_class, spec.class_names, nrow)
    if as_grid:
        what = f"--per-class {per_class}" if per_class is not None else f"--n {n}"
        check_grid(plan.n, spec.image_size, what, "give a folder as --out")

    gaussian, data_line = None, ""
    prior = "N(0, I) prior" if temperature == 1 else f"N(0, {temperature:g}² I) prior"
    if fit is not None:
        gaussian, data_line = _fit(ckpt, checkpoint, fit, fit_kind=fit_kind, fit_n=fit_n, fit_split=fit_split,
                                   data_root=data_root, batch_size=batch_size, device=dev, progress=progress)
        prior = gaussian.describe() + ("" if temperature == 1 else f", temperature {temperature:g}")

    def decode(indices: Sequence[int]) -> torch.Tensor:
        eps = draw_eps(model.latent_shape, seed, indices) * temperature
        z = gaussian.transform(eps) if gaussian is not None else eps
        labels = torch.tensor([plan.label(i) for i in indices], device=dev) if plan.class_count else None
        return spec.to_unit_range(model.decode(z.to(dev), labels).float()).cpu()

    if as_grid:
        images = torch.cat([decode(range(a, min(plan.n, a + batch_size))) for a in range(0, plan.n, batch_size)])
        save_grid(images, out_path, plan.columns, row_labels=plan.row_labels, tile_size=tile_size)
        return SampleResult(out_path, "grid", plan.n, 1, 0, prior, plan.rows, plan.columns, data_line)

    settings = {"checkpoint": os.path.abspath(checkpoint), "seed": seed, "temperature": temperature,
                "class": class_index, "per_class": per_class, "fit": None if fit is None else
                {"data": fit if isinstance(fit, str) else list(map(str, fit)), "kind": fit_kind, "n": fit_n,
                 "split": fit_split}, "ema": ema}
    out_path.mkdir(parents=True, exist_ok=True)
    with FolderLock(out_path, "sample"):  # two samplers into one folder would mix their sets
        _check_manifest(out_path, settings)
        # Temp files of a run killed mid-write (atomic writes never leave a partial PNG under its name).
        remove_stale_temps(out_path, lambda target: fnmatch.fnmatch(target, "sample_*.png"), recursive=True)
        write_text(out_path / MANIFEST, json.dumps(settings, indent=2))
        written, skipped = _write_samples(out_path, plan, decode, batch_size, progress)
    return SampleResult(out_path, "folder", plan.n, written, skipped, prior, plan.rows, plan.columns, data_line)


def _check_options(out: str | os.PathLike[str], temperature: float, batch_size: int,
                   nrow: int | None) -> tuple[Path, bool]:
    """Refuse bad options before the checkpoint is read → (output path, whether it is one grid PNG)."""
    if not (temperature >= 0 and math.isfinite(temperature)):
        raise UsageError(f"--temperature must be a number >= 0, got {temperature}")
    if batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {batch_size}")
    if nrow is not None and nrow < 1:
        raise UsageError(f"--grid-columns must be at least 1, got {nrow}")
    out_path = check_writable(out)
    as_grid = out_path.suffix.lower() == ".png"
    if as_grid and out_path.is_dir():
        raise UsageError(f"--out {out} is a folder; a .png path gives a grid, a folder gives one PNG per sample")
    if not as_grid and out_path.exists() and not out_path.is_dir():
        raise UsageError(f"--out {out} is a file; give a .png path (grid) or a folder (one PNG per sample)")
    return out_path, as_grid


def _fit(ckpt: Any, checkpoint: str | os.PathLike[str], fit: str | Sequence[str], *, fit_kind: str, fit_n: int,
         fit_split: str, data_root: str | None, batch_size: int, device: torch.device,
         progress: bool) -> tuple[Any, str]:
    """`--fit`: a Gaussian fitted to the latents of ``fit_n`` images → (the Gaussian, the data line)."""
    if fit_n < 2:
        raise UsageError(f"--fit-n must be at least 2, got {fit_n}")
    fit_data = open_for(ckpt.data, fit, checkpoint=checkpoint, split=fit_split, limit=fit_n, data_root=data_root,
                        progress=tty(progress))
    latents = encode_images(ckpt.model, fit_data, ckpt.data.value_range, batch_size=batch_size, device=device,
                            progress=progress, description="encoding --fit data")
    return fit_gaussian(latents, fit_kind), fit_data.provenance.line(len(fit_data))


def _write_samples(out_path: Path, plan: _Plan, decode: Any, batch_size: int, progress: bool) -> tuple[int, int]:
    """Write the samples a folder lacks, in batches; returns (written, already there)."""
    written = skipped = 0
    with Progress(plan.n, f"sampling into {out_path}", enabled=progress, min_total=512) as bar:
        for a in range(0, plan.n, batch_size):
            idx = range(a, min(plan.n, a + batch_size))
            missing = [i for i in idx if not (out_path / plan.name(i)).exists()]
            skipped += len(idx) - len(missing)
            if missing:
                for i, img in zip(missing, decode(missing)):
                    save_png(img, out_path / plan.name(i))
                written += len(missing)
            bar.advance(len(idx))
    return written, skipped
