"""Decode one image file into a uint8 [C, S, S] array: the only per-image PIL work aecli ever does.

This module imports only PIL and numpy: it is what spawned decode workers load, so they start fast.
Resize + crop reproduce torchvision's ``Resize(S)`` + ``CenterCrop(S)`` on PIL images exactly (PIL
bilinear, which antialiases when shrinking), so results match the seeds' ImageFolder pipelines.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps

from aecli.untrusted import regular_file

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
# Checked on the header, before any pixel is decoded. Pixels: PIL's own hard limit (2 × its 89 Mpx
# warning), stated here so it holds whatever PIL is configured to. Aspect ratio: Resize(S) scales the
# shorter side to S, so a 1×200000 strip (a 661-byte PNG) would become a 64×12.8M image (2.4 GB) before
# the crop; no photo, scan or panorama is this elongated.
MAX_PIXELS = 178_956_970
MAX_ASPECT_RATIO = 50
_WIDE_GRAY = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")  # more than 8 bits per pixel


def _wide_to_l(im: Image.Image) -> Image.Image:
    """16/32-bit or float grayscale → 8-bit L by scaling, not clipping (PIL's convert("L") clips at 255)."""
    arr = np.asarray(im)
    if im.mode == "F":
        arr = arr.astype(np.float64)
        scaled = arr * 255.0 if np.nanmax(arr, initial=0.0) <= 1.0 else arr
        out = np.nan_to_num(scaled).clip(0, 255).round()
    elif im.mode == "I" and arr.max(initial=0) <= 255:
        out = arr.clip(0, 255)  # an "I" image that only holds 8-bit values
    else:
        out = (arr.astype(np.int64).clip(0, 65535) * 255 + 32767) // 65535  # round(v / 257)
    return Image.fromarray(out.astype(np.uint8), mode="L")


def _flatten(im: Image.Image) -> Image.Image:
    """Any mode → L, RGB or RGBA-composited-on-white RGB. Transparent pixels become white: sketches and
    icons saved with alpha are drawn on white, and black (what dropping alpha gives) hides dark strokes."""
    if im.mode in _WIDE_GRAY:
        return _wide_to_l(im)
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info:
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if im.mode in ("L", "RGB"):
        return im
    if im.mode == "1":
        return im.convert("L")
    return im.convert("RGB")  # P, CMYK, YCbCr, LAB, HSV


def resize_center_crop(im: Image.Image, size: int) -> Image.Image:
    """torchvision Resize(size) (shorter side → size) then CenterCrop(size), same rounding."""
    w, h = im.size
    if (w, h) == (size, size):
        return im
    if w <= h:
        nw, nh = size, int(size * h / w)
    else:
        nw, nh = int(size * w / h), size
    if (nw, nh) != (w, h):
        im = im.resize((nw, nh), Image.Resampling.BILINEAR)
    left = int(round((nw - size) / 2.0))
    top = int(round((nh - size) / 2.0))
    return im.crop((left, top, left + size, top + size))


def load_image(path: str, size: int, channels: int) -> np.ndarray:
    """Decode ``path`` to uint8 [channels, size, size]; raises on anything unreadable."""
    problem = regular_file(path)
    if problem is not None:  # a FIFO would block open() forever, a device would read without end
        raise ValueError(f"{problem}, not a regular file" if problem.startswith("a ") else problem)
    with Image.open(path) as im:
        w, h = im.size
        if w * h > MAX_PIXELS:
            raise ValueError(f"{w}×{h} is {w * h / 1e6:.0f} Mpx, over the {MAX_PIXELS / 1e6:.0f} Mpx aecli decodes")
        if max(w, h) > MAX_ASPECT_RATIO * max(1, min(w, h)):
            raise ValueError(f"{w}×{h} is more elongated than {MAX_ASPECT_RATIO}:1")
        if im.format == "JPEG":
            im.draft(im.mode, (size, size))  # DCT-domain downscale, still >= size on the shorter side
        im.load()
        im = ImageOps.exif_transpose(im)  # phone photos store rotation in EXIF
        im = _flatten(im)
        im = im.convert("L" if channels == 1 else "RGB")
        im = resize_center_crop(im, size)
        arr = np.asarray(im, dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[None]
    else:
        arr = arr.transpose(2, 0, 1)
    return np.ascontiguousarray(arr)


def decode_task(task: tuple[str, int, int]) -> tuple[np.ndarray | None, str]:
    """Pool entry point: (array, "") or (None, reason). Any exception means "unreadable": files come from
    the user's disk and PIL raises many types (OSError, SyntaxError, ValueError, DecompressionBombError)."""
    path, size, channels = task
    try:
        return load_image(path, size, channels), ""
    except Exception as exc:  # noqa: BLE001 - see docstring
        why = str(exc).replace(repr(path), "").replace(path, "").strip(" :")  # the path is named anyway
        return None, why or type(exc).__name__
