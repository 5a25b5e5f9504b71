"""Writing images: single PNGs and self-labelling grids, atomically (no half-written PNG survives a kill).

A grid is meant to be pasted into a paper or a chat as it is: small tiles are enlarged (nearest
neighbour, so pixels stay sharp and exact), rows and columns carry their labels (ground truth / each
checkpoint, class names, scales, t), and N images fill rows × columns exactly unless columns are asked for.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from PIL import Image, ImageDraw, ImageFont

from aecli.atomic import atomic_path
from aecli.errors import UsageError

MIN_TILE = 96  # default on-screen size of a tile: 8–32 px images are unreadable at 1:1
NEAREST_MAX = 64  # up to this size tiles are enlarged by nearest neighbour (pixel art stays pixel art)
PAD = 2  # white gap between tiles
FONT_PX = 13
MAX_ROW_LABEL_PX = 220  # longer row labels are shortened in the middle


def to_uint8(x01: torch.Tensor) -> torch.Tensor:
    """[0, 1] float images (any layout, on their device) → uint8: clamped, ×255, rounded to nearest.
    The one quantisation aecli applies: PNGs, GIFs and the Inception input (as torch-fidelity's folder
    input would quantise them)."""
    return (x01.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)


def to_pil(x01: torch.Tensor):  # type: ignore[no-untyped-def]
    """A [0, 1] (C, H, W) image → PIL image (gray for one channel)."""
    arr = to_uint8(x01).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr)


def save_png(x01: torch.Tensor, path: str | os.PathLike[str]) -> None:
    with atomic_path(path) as tmp:
        to_pil(x01).save(tmp, format="PNG")


def grid_shape(n: int, columns: int | None = None) -> tuple[int, int]:
    """(rows, columns) for ``n`` tiles. Asked-for ``columns`` may leave the last row short; otherwise
    the most nearly square rows × columns = n (columns ≥ rows), so no cell is empty."""
    if n < 1:
        raise ValueError("a grid needs at least one image")
    if columns:
        return math.ceil(n / columns), columns
    rows = max(r for r in range(1, math.isqrt(n) + 1) if n % r == 0)
    return rows, n // rows


def tile_size_for(size: int, tile_size: int | None = None) -> int:
    """Displayed tile size: ``tile_size`` when given, else small images enlarged by the smallest whole
    factor that reaches MIN_TILE px (32 → 96, 28 → 112, 64 → 128), larger ones as they are."""
    if tile_size is not None:
        if tile_size < 1:
            raise UsageError(f"--tile-size must be at least 1 pixel, got {tile_size}")
        return tile_size
    if size > NEAREST_MAX:
        return size
    return size * max(1, math.ceil(MIN_TILE / size))


def _font(px: int = FONT_PX):  # type: ignore[no-untyped-def]
    """DejaVu Sans from matplotlib (a dependency): it has −, × and ·, which Pillow's own font lacks."""
    try:
        import matplotlib

        return ImageFont.truetype(os.path.join(matplotlib.get_data_path(), "fonts", "ttf", "DejaVuSans.ttf"), px)
    except (ImportError, OSError):
        return ImageFont.load_default()


def _fit(text: str, font, width: int) -> str:  # type: ignore[no-untyped-def]
    """``text`` shortened in the middle ("run-a…best.safetensors") to fit ``width`` pixels."""
    if font.getlength(text) <= width:
        return text
    keep = len(text)
    while keep > 1:
        keep -= 1
        head, tail = text[: (keep + 1) // 2], text[len(text) - keep // 2:]
        short = f"{head}…{tail}"
        if font.getlength(short) <= width:
            return short
    return "…"


def _wrap(text: str, font, width: int, max_lines: int = 2) -> list[str]:  # type: ignore[no-untyped-def]
    """A column label as lines that fit ``width``: its own line breaks, long lines wrapped at spaces,
    at most ``max_lines`` extra lines per part; what still does not fit is shortened in the middle."""
    lines: list[str] = []
    for part in text.split("\n"):
        words, current, wrapped = part.split(" "), "", []
        for word in words:
            trial = f"{current} {word}" if current else word
            if current and font.getlength(trial) > width and len(wrapped) < max_lines - 1:
                wrapped.append(current)
                current = word
            else:
                current = trial
        lines += [_fit(line, font, width) for line in [*wrapped, current]]
    return lines


@dataclass(frozen=True)
class GridLayout:
    """Where everything goes, in pixels; ``tile_xy(r, c)`` is a tile's top-left corner."""

    rows: int
    columns: int
    tile: int
    left: int  # row-label margin
    top: int  # title and column-label band
    line: int  # text line height

    @property
    def width(self) -> int:
        return self.left + self.columns * (self.tile + PAD) + PAD

    @property
    def height(self) -> int:
        return self.top + self.rows * (self.tile + PAD) + PAD

    def tile_xy(self, row: int, column: int) -> tuple[int, int]:
        return self.left + PAD + column * (self.tile + PAD), self.top + PAD + row * (self.tile + PAD)


def grid_layout(n: int, image_size: int, columns: int | None = None, *, row_labels: Sequence[str] | None = None,
                column_labels: Sequence[str] | None = None, title: str | None = None,
                tile_size: int | None = None) -> GridLayout:
    rows, cols = grid_shape(n, columns)
    font = _font()
    line = FONT_PX + 4
    left = 0
    if row_labels:
        widest = max(font.getlength(s) for s in row_labels)
        left = math.ceil(min(widest, MAX_ROW_LABEL_PX)) + 2 * PAD + 6
    tile = tile_size_for(image_size, tile_size)
    lines = (1 if title else 0) + (max(len(_wrap(s, font, tile)) for s in column_labels) if column_labels else 0)
    top = lines * line + (PAD if lines else 0)
    return GridLayout(rows, cols, tile, left, top, line)


def save_grid(images01: torch.Tensor, path: str | os.PathLike[str], columns: int | None = None, *,
              row_labels: Sequence[str] | None = None, column_labels: Sequence[str] | None = None,
              title: str | None = None, tile_size: int | None = None) -> Path:
    """Save a (N,C,H,W) batch in [0,1] as one labelled grid PNG, row-major.

    ``columns`` None: the most nearly square exact layout (see grid_shape). ``row_labels`` go left of
    each row, ``column_labels`` (may hold "\\n") above each column, ``title`` on top. Tiles are
    enlarged to tile_size_for(size, tile_size); one-channel batches give a greyscale PNG.
    """
    images01 = images01.detach().float().cpu()
    n, channels, height, width = images01.shape
    lay = grid_layout(n, max(height, width), columns, row_labels=row_labels, column_labels=column_labels,
                      title=title, tile_size=tile_size)
    mode = "L" if channels == 1 else "RGB"
    canvas = Image.new(mode, (lay.width, lay.height), 255 if mode == "L" else (255, 255, 255))
    resample = Image.NEAREST if max(height, width) <= NEAREST_MAX else Image.LANCZOS
    for i in range(n):
        tile = to_pil(images01[i])
        if tile.size != (lay.tile, lay.tile):
            tile = tile.resize((lay.tile, lay.tile), resample)
        canvas.paste(tile.convert(mode), lay.tile_xy(*divmod(i, lay.columns)))
    draw = ImageDraw.Draw(canvas)
    font, ink = _font(), 0 if mode == "L" else (0, 0, 0)
    y = PAD
    if title:
        draw.text((PAD + 2, y), _fit(title, font, lay.width - 2 * PAD), fill=ink, font=font)
        y += lay.line
    for c, text in enumerate(column_labels or []):
        x0 = lay.tile_xy(0, c)[0]
        for k, part in enumerate(_wrap(text, font, lay.tile)):
            draw.text((x0 + (lay.tile - font.getlength(part)) / 2, y + k * lay.line), part, fill=ink, font=font)
    for r, text in enumerate(row_labels or []):
        part = _fit(text, font, lay.left - 2 * PAD - 6)
        y0 = lay.tile_xy(r, 0)[1]
        draw.text((PAD + 2, y0 + (lay.tile - lay.line) / 2), part, fill=ink, font=font)
    with atomic_path(path) as tmp:
        canvas.save(tmp, format="PNG")
    return Path(path)
