"""Embedded, offline datasets: scikit-learn's handwritten digits and procedurally drawn shapes."""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image, ImageDraw

from aecli.data.catalog import Catalog, DecodeOptions, array_fill

SHAPE_CLASSES = ["circle", "square", "triangle", "diamond", "star", "cross"]
_SHAPES_SEED = 20240501  # fixed: shape i is the same picture on every machine and every run
_SHAPES_VERSION = 1  # bump when drawing changes, so old caches are not reused


def digits_catalog() -> Catalog:
    """sklearn's bundled 8×8 digits (1,797 images, 10 classes); 0–16 intensities → 0–255."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    pixels = torch.from_numpy(np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None])
    labels = np.asarray(bunch.target, dtype=np.int64)
    names = [f"digits:{i}" for i in range(len(labels))]
    fill = array_fill(lambda idx: pixels[torch.from_numpy(np.asarray(idx, dtype=np.int64))])
    return Catalog("digits (scikit-learn)", "digits:sklearn-8x8:v1", names, labels,
                   [str(d) for d in range(10)], fill, "digits")


def _polygon(kind: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    def ring(count: int, radii: list[float], offset: float) -> list[tuple[float, float]]:
        return [(cx + radii[k % len(radii)] * math.cos(offset + 2 * math.pi * k / count),
                 cy + radii[k % len(radii)] * math.sin(offset + 2 * math.pi * k / count)) for k in range(count)]

    if kind == "square":
        return ring(4, [r], angle + math.pi / 4)
    if kind == "triangle":
        return ring(3, [r], angle - math.pi / 2)
    if kind == "diamond":
        return [(cx, cy - r), (cx + 0.6 * r, cy), (cx, cy + r), (cx - 0.6 * r, cy)]
    if kind == "star":
        return ring(10, [r, 0.45 * r], angle - math.pi / 2)
    # cross: a plus sign of arm half-width r/3, rotated
    a = r / 3
    pts = [(a, r), (a, a), (r, a), (r, -a), (a, -a), (a, -r), (-a, -r), (-a, -a), (-r, -a), (-r, a),
           (-a, a), (-a, r)]
    c, s = math.cos(angle), math.sin(angle)
    return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in pts]


def draw_shape(index: int, size: int, channels: int = 3) -> tuple[np.ndarray, int]:
    """Shape ``index`` as uint8 [channels, size, size] and its class; a pure function of its arguments."""
    rng = np.random.default_rng([_SHAPES_SEED, index])
    label = index % len(SHAPE_CLASSES)
    background = rng.integers(0, 256, 3)
    while True:  # a foreground clearly distinct from the background, so every shape is visible
        colour = rng.integers(0, 256, 3)
        if np.abs(colour - background).sum() >= 200:
            break
    scale = 4 if size <= 64 else 2  # supersample, then box-filter down: smooth edges at any size
    canvas = size * scale
    r = rng.uniform(0.2, 0.42) * canvas
    cx, cy = rng.uniform(r, canvas - r, 2)
    angle = rng.uniform(0, 2 * math.pi)
    img = Image.new("RGB", (canvas, canvas), tuple(int(v) for v in background))
    draw = ImageDraw.Draw(img)
    fill = tuple(int(v) for v in colour)
    kind = SHAPE_CLASSES[label]
    if kind == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    else:
        draw.polygon(_polygon(kind, cx, cy, r, angle), fill=fill)
    if scale > 1:
        img = img.resize((size, size), Image.Resampling.BOX)
    if channels == 1:
        return np.array(img.convert("L"), dtype=np.uint8)[None], label
    return np.array(img, dtype=np.uint8).transpose(2, 0, 1), label


def shapes_catalog(count: int) -> Catalog:
    labels = np.arange(count, dtype=np.int64) % len(SHAPE_CLASSES)
    names = [f"shapes:{i}" for i in range(count)]

    def fill(indices: np.ndarray, out: np.ndarray, opts: DecodeOptions) -> tuple[np.ndarray, list[int]]:
        # Drawn straight at the target size: no resampling of a small drawing.
        for k, i in enumerate(indices):
            out[k] = draw_shape(int(i), opts.image_size, opts.channels)[0]
        return np.asarray(indices, dtype=np.int64), []

    return Catalog(f"shapes ({count} images)", f"shapes:v{_SHAPES_VERSION}:{count}", names, labels,
                   list(SHAPE_CLASSES), fill, f"shapes{count}")


# Openers of the registered sources (aecli.data.registry): (key, data_root, download) → (train, official val).
def digits_catalogs(key: str, data_root: str | None, download: bool) -> tuple[Catalog, None]:
    return digits_catalog(), None


def shapes_catalogs(key: str, data_root: str | None, download: bool) -> tuple[Catalog, None]:
    return shapes_catalog(int(key.partition(":")[2])), None
