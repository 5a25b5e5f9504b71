"""`aecli interpolate`: a latent walk between two images, two dataset items or two prior draws, as a
grid PNG and optionally an animated GIF. Works on flat and spatial latents and on the GAN's z."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from aecli.atomic import atomic_path
from aecli.data import open_for, open_source, to_model_input
from aecli.devices import resolve_device
from aecli.errors import UsageError
from aecli.images import save_grid, to_pil
from aecli.inference.common import (
    check_capability, check_png_path, labels_for, load_for, parse_class, precheck,
)
from aecli.inference.latents import decode_latents, decoder_latent, interpolate_latents
from aecli.inference.sample import check_grid, draw_eps

GIF_MIN_SIZE = 128  # small images (28 px digits) are enlarged (nearest) so the animation is visible


@dataclass
class InterpolateResult:
    out: Path
    gif: Path | None
    mode: str  # "images", "indices" or "prior"
    method: str
    latents: torch.Tensor  # [steps, *latent_shape]: the walk, first and last are the end points
    images: torch.Tensor  # [steps, C, H, W] in [0, 1]
    data_line: str = ""  # which source, split rule and N the end points came from (none for prior draws)


def save_gif(frames01: torch.Tensor, path: str | os.PathLike[str], frame_ms: int = 100,
             bounce: bool = True) -> Path:
    """Frames [T, C, H, W] in [0, 1] → looping GIF (forward then backward with ``bounce``), atomically."""
    size = frames01.shape[-1]
    scale = max(1, -(-GIF_MIN_SIZE // size))
    order = list(range(len(frames01)))
    if bounce and len(order) > 2:
        order += order[-2:0:-1]
    pictures = []
    for i in order:
        img = to_pil(frames01[i])
        pictures.append(img.resize((img.width * scale, img.height * scale), Image.NEAREST) if scale > 1 else img)
    with atomic_path(path) as tmp:
        pictures[0].save(tmp, format="GIF", save_all=True, append_images=pictures[1:], duration=frame_ms, loop=0)
    return Path(path)


def _endpoints(model: Any, spec: Any, path: Any, dev: torch.device, *, from_image: str | None,
               to_image: str | None, from_index: int | None, to_index: int | None, data: str | None,
               split: str, seed: int, temperature: float, data_root: str | None) -> tuple[str, torch.Tensor, Any, str]:
    """(mode, latents [2, *shape], labels of the two end points or None, the data line or "")."""
    images = from_image is not None or to_image is not None
    indices = from_index is not None or to_index is not None
    if images and indices:
        raise UsageError("give --from/--to images or --from-index/--to-index, not both")
    if data and not indices:
        raise UsageError("--data picks the end points with --from-index/--to-index; give both (or drop --data "
                         "for two prior draws)")
    if not images and not indices and not model.has_prior and model.has_encoder:
        # A plain autoencoder has no prior: walk between the first two held-out training images.
        from_index, to_index, indices = 0, 1, True
    if images or indices:
        check_capability(model, path, "interpolate between images", encoder=True)
    if images:
        if from_image is None or to_image is None:
            raise UsageError("give both --from IMAGE and --to IMAGE")
        pair = open_source([from_image, to_image], image_size=spec.image_size, channels=spec.channels)
        if len(pair) != 2:
            raise UsageError(f"could not read {', '.join(pair.skipped)}; give two readable images")
        mode = "images"
    elif indices:
        if from_index is None or to_index is None:
            raise UsageError("give both --from-index and --to-index")
        if min(from_index, to_index) < 0:
            raise UsageError("--from-index/--to-index must be >= 0")
        full = open_for(spec, data, checkpoint=path, split=split, limit=max(from_index, to_index) + 1,
                        data_root=data_root)
        if max(from_index, to_index) >= len(full):
            p = full.provenance
            where = p.source if p.split == "files" else f"the {p.split} split of {p.source}"
            raise UsageError(f"index {max(from_index, to_index)} is out of range: {where} has {p.split_size} "
                             f"image{'' if p.split_size == 1 else 's'}")
        pair = full.subset([from_index, to_index])
        pair.provenance = full.provenance
        mode = "indices"
    else:
        if not model.has_prior:
            raise UsageError(f"{path}: {model.family} has no prior to draw end points from; give --from/--to "
                             "images or --from-index/--to-index with --data")
        return "prior", draw_eps(model.latent_shape, seed, [0, 1]) * temperature, None, ""
    x = to_model_input(pair.take([0, 1]).to(dev), spec.value_range)
    with torch.no_grad():
        z = decoder_latent(model, x).float().cpu()
    return mode, z, pair.labels, pair.provenance.line(len(pair))


def _end_names(mode: str, from_image: str | None, to_image: str | None, from_index: int | None,
               to_index: int | None, seed: int) -> tuple[str, str]:
    if mode == "images":
        return Path(str(from_image)).name, Path(str(to_image)).name
    if mode == "indices":
        return f"image #{from_index}", f"image #{to_index}"
    return f"prior draw 0 (seed {seed})", f"prior draw 1 (seed {seed})"


def walk_labels(steps: int, start: str, end: str) -> list[str]:
    """Column labels of a walk: t of every frame; the end points also say what they are."""
    ts = [f"t={i / (steps - 1):.2f}".rstrip("0").rstrip(".") if steps > 1 else "t=0" for i in range(steps)]
    return [f"{start}\n{ts[0]}", *ts[1:-1], f"{end}\n{ts[-1]}"] if steps > 1 else [f"{start}\n{ts[0]}"]


@torch.no_grad()
def interpolate(
    checkpoint: str | os.PathLike[str], out: str | os.PathLike[str], *, from_image: str | None = None,
    to_image: str | None = None, from_index: int | None = None, to_index: int | None = None,
    data: str | None = None, split: str = "auto", steps: int = 10, method: str = "lerp", seed: int = 0,
    temperature: float = 1.0, gif: str | os.PathLike[str] | None = None, frame_ms: int = 100,
    class_name: str | None = None, device: str = "auto", ema: bool = False, data_root: str | None = None,
    tile_size: int | None = None,
) -> InterpolateResult:
    """Decode ``steps`` latents from one end point to the other into a one-row grid at ``out``, its
    columns labelled with t and the end points with what they are."""
    out_path = check_png_path(out)
    if gif is not None and not str(gif).lower().endswith(".gif"):
        raise UsageError(f"--gif must be a .gif file, got {gif}")
    if frame_ms < 1:
        raise UsageError(f"--frame-ms must be at least 1, got {frame_ms}")
    check_grid(steps, 1, f"--steps {steps}", "use fewer steps")  # the count, before building anything
    interpolate_latents(torch.zeros(1), torch.ones(1), steps, method)  # validates steps/method up front
    if not (temperature >= 0 and math.isfinite(temperature)):
        raise UsageError(f"--temperature must be a number >= 0, got {temperature}")
    precheck(checkpoint, "interpolate", decoder=True)
    ckpt = load_for(checkpoint, resolve_device(device), "interpolate", ema=ema, decoder=True)
    model, spec = ckpt.model, ckpt.data
    check_grid(steps, spec.image_size, f"--steps {steps}", "use fewer steps")
    dev = next(model.parameters()).device
    class_index = parse_class(class_name, spec.class_names, model.config.num_classes if model.is_conditional else 0)
    mode, ends, end_labels, data_line = _endpoints(model, spec, checkpoint, dev, from_image=from_image, to_image=to_image,
                                        from_index=from_index, to_index=to_index, data=data, split=split,
                                        seed=seed, temperature=temperature, data_root=data_root)
    walk = interpolate_latents(ends[0], ends[1], steps, method)
    # A conditional walk keeps one class: --class, else the first end point's label.
    first_label = end_labels[:1].repeat(steps) if end_labels is not None else None
    labels = labels_for(model, steps, class_index, first_label)
    images = decode_latents(model, walk, spec, labels)
    save_grid(images, out_path, steps, column_labels=walk_labels(steps, *_end_names(mode, from_image, to_image,
                                                                                  from_index, to_index, seed)),
              title=f"{method} in latent space", tile_size=tile_size)
    gif_path = save_gif(images, gif, frame_ms) if gif is not None else None
    return InterpolateResult(out_path, gif_path, mode, method, walk, images, data_line)
