"""Paired image folders for `aecli evaluate --pred DIR --ref DIR`: images produced elsewhere (another
tool's reconstructions, a codec) scored against references, paired by relative file name.

Files pair by relative path without the extension (``a/01.png`` ↔ ``a/01.jpg``), since codecs often
change it. Images are compared at their stored size, never resized.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from PIL import Image

from aecli.data.folders import walk_images
from aecli.errors import DataError, UsageError

_SHOW = 8  # how many problem files an error names


@dataclass
class Pairs:
    items: list[tuple[Path, Path, tuple[int, int, int]]]  # (pred, ref, (H, W, C))
    ref_identity: str  # changes when any reference file changes: keys the reference-feature cache
    channels: int

    @property
    def shapes(self) -> set[tuple[int, int, int]]:
        return {shape for _, _, shape in self.items}


def _index(root: Path, what: str) -> tuple[dict[str, Path], list[tuple[str, int, int]]]:
    if not root.is_dir():
        raise UsageError(f"--{what} {root} is not a folder")
    entries = walk_images(root)
    out: dict[str, Path] = {}
    for rel, _, _ in entries:
        key = rel.rsplit(".", 1)[0]
        if key in out:
            raise DataError(f"--{what} {root}: {out[key].name} and {Path(rel).name} pair ambiguously "
                            "(same name, different extension); remove one")
        out[key] = root / rel
    return out, entries


def _probe(path: Path) -> tuple[int, int, int]:
    try:
        with Image.open(path) as im:
            w, h = im.size
            return h, w, 1 if im.mode in ("1", "L", "I", "I;16", "F") else 3
    except Exception as exc:  # noqa: BLE001 - PIL raises many types for a bad file
        raise DataError(f"{path} is not a readable image ({type(exc).__name__}); fix or remove it") from None


def pair_folders(pred_dir: str, ref_dir: str, skip_unpaired: bool = False,
                 warn: Callable[[str], None] = lambda s: None) -> Pairs:
    """Pair files; unpaired or size-mismatched files are an error listing them, or skipped."""
    preds, _ = _index(Path(pred_dir), "pred")
    refs, ref_entries = _index(Path(ref_dir), "ref")
    problems = [f"{preds[k]} has no reference" for k in sorted(set(preds) - set(refs))]
    problems += [f"{refs[k]} has no prediction" for k in sorted(set(refs) - set(preds))]
    items = []
    for key in sorted(set(preds) & set(refs)):
        (ph, pw, pc), (rh, rw, rc) = _probe(preds[key]), _probe(refs[key])
        if (ph, pw) != (rh, rw):
            problems.append(f"{preds[key]} is {pw}x{ph} but {refs[key]} is {rw}x{rh}")
            continue
        items.append((preds[key], refs[key], (rh, rw, max(pc, rc))))
    if problems:
        shown = "; ".join(problems[:_SHOW]) + (f"; … {len(problems) - _SHOW} more" if len(problems) > _SHOW else "")
        if not skip_unpaired:
            raise DataError(f"{len(problems)} unpaired or mismatched file(s): {shown}. Fix the folders or pass "
                            "--skip-unpaired")
        warn(f"skipped {len(problems)} unpaired or mismatched file(s): {shown}")
    if not items:
        raise DataError(f"no image pairs between {pred_dir} and {ref_dir} (paired by relative name without "
                        "extension)")
    # Gray only when every image is gray: one RGB file makes the whole set RGB (metrics need one C).
    channels = max(c for _, _, (_, _, c) in items)
    items = [(p, r, (h, w, channels)) for p, r, (h, w, _) in items]
    used = {str(r) for _, r, _ in items}
    listing = [e for e in ref_entries if str(Path(ref_dir) / e[0]) in used]
    identity = hashlib.sha256(repr((str(Path(ref_dir).resolve()), listing)).encode()).hexdigest()[:16]
    return Pairs(items, f"folder:{identity}", channels)


def _read(path: Path, channels: int) -> np.ndarray:
    with Image.open(path) as im:
        arr = np.asarray(im.convert("L" if channels == 1 else "RGB"), dtype=np.uint8)
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def iter_pair_batches(pairs: Pairs, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """uint8 (pred, ref) batches, each of one image size; files are read once, batch by batch."""
    by_shape: dict[tuple[int, int, int], list[tuple[Path, Path]]] = {}
    for pred, ref, shape in pairs.items:
        by_shape.setdefault(shape, []).append((pred, ref))
    for shape in sorted(by_shape):
        group = by_shape[shape]
        for start in range(0, len(group), batch_size):
            chunk = group[start:start + batch_size]
            pred = torch.from_numpy(np.stack([_read(p, shape[2]) for p, _ in chunk]))
            ref = torch.from_numpy(np.stack([_read(r, shape[2]) for _, r in chunk]))
            yield pred, ref
