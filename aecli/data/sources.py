"""open_source: any ``--data`` value → an ImageSet for one split.

Resolution of a source string, in order: a named set of aecli.data.registry (``digits``,
``shapes``/``shapes:N``, ``mnist``, ``fashion-mnist``, ``cifar10``, ``celeba``), then a path: a folder is QuickDraw when its
``*.npy`` files outnumber its images, else an image folder (a warning names the files of the other kind
that are ignored; ``quickdraw:DIR`` or ``images:DIR`` chooses explicitly), a file is a single image.
(Write ``./digits`` for a folder that happens to be called like a built-in set.) A list of paths is a
list of image files.

Splits are computed on the catalog (the sorted file listing, or the dataset's own order) before any
decoding, so they do not depend on the cache, the workers or which files turn out unreadable:
- ``val_count=N``: the first N items are validation (seed 000: the first 1,000 images);
- ``val_fraction=f``: a fixed pseudo-random set of round(f·N) items (RNG seed 0, independent of the
  training seed), kept between 1 and N-1 so that neither side is empty;
- neither: mnist, fashion-mnist and cifar10 use their official test split as "val" (celeba its official
  "valid" partition); other sources use ``val_fraction=0.1``. With val_count/val_fraction, a dataset
  with an official split carves validation out of its training split.
- ``split="all"``: every item (official train followed by official test where there is one).
Explicitly named image files ignore the split: all of them are used, in the given order.
``limit`` keeps the first ``limit`` items of the split. Unreadable files among them are skipped.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from aecli.data import cache, folders, quickdraw
from aecli.data.catalog import Catalog, DecodeOptions
from aecli.data.decode import IMAGE_EXTENSIONS
from aecli.data.imageset import ImageSet, concat, select_rows
from aecli.data.registry import DataSource, get_source, match_folder, match_named, named_sets
from aecli.data.spec import DataSpec
from aecli.errors import DataError, UsageError

MAX_IMAGE_SIZE = 8192  # one 3-channel image of this size is 200 MB decoded; models stop at 1024
DEFAULT_VAL_FRACTION = 0.1
# What a command's --split takes; "auto" = val of the checkpoint's training data, all of other data.
SPLIT_CHOICES = ("auto", "val", "train", "all")
SPLIT_SEED = 0
_SHOW_SKIPPED = 5  # how many unreadable paths a warning or error names


class DataWarning(UserWarning):
    """Something about the data the user should know (skipped files), not fatal."""


@dataclass
class _Resolved:
    train: Catalog
    official_val: Catalog | None = None
    explicit_files: bool = False


def _resolve(source: str | Sequence[str], data_root: str | None, download: bool) -> _Resolved:
    if not isinstance(source, str):
        files = [str(s) for s in source]
        if not files:
            raise DataError("no image files given")
        return _Resolved(folders.files_catalog(files), explicit_files=True)
    named = match_named(source)
    if named is not None:
        kind, key = named
        train, official_val = kind.open(key, data_root, download)
        return _Resolved(train, official_val)
    explicit = match_folder(source)
    if explicit is not None:
        kind, rest = explicit
        folder = Path(os.path.expanduser(rest))
        if not folder.is_dir():
            raise DataError(f"{source}: {rest} is not a folder; give {kind.name}:DIR with an existing folder")
        return _Resolved(kind.open(folder))
    path = Path(os.path.expanduser(source))
    if path.is_dir():
        return _Resolved(_folder_by_majority(path))
    if path.exists() or path.is_symlink():
        if not source.lower().endswith(IMAGE_EXTENSIONS):
            raise DataError(f"{source} is not an image file ({', '.join(IMAGE_EXTENSIONS)}) nor a folder")
        return _Resolved(folders.files_catalog([source]), explicit_files=True)
    names = ", ".join(s.name + (":N" if s.counted else "") for s in named_sets())
    raise DataError(f"data source {source!r} not found: give a folder of images, an image file, a folder "
                    f"of QuickDraw .npy files, or one of {names}")


def _majority_kind(path: Path, announce: bool) -> tuple[str, list[tuple[str, int, int]] | None]:
    """How a bare folder is read ("quickdraw" or "images", and its image listing when walked): as
    whichever kind it holds more files of. One stray ``latents.npy`` must not turn a folder of PNGs
    into QuickDraw data, nor a preview PNG a QuickDraw folder into an image folder. With ``announce``
    a mixed folder's choice is said, with the prefix that overrides it."""
    npy = quickdraw.npy_files(path)
    if not npy:
        return "images", None  # the common case: no walk here, the catalog walks once
    images = folders.walk_images(path)
    if not images:
        return "quickdraw", images
    if len(npy) > len(images):
        if announce:
            warnings.warn(f"{path} holds {len(npy)} .npy file(s) and {len(images)} image file(s): read as "
                          f"QuickDraw data, the images are ignored (write images:{path} to read the images "
                          "instead)", DataWarning, stacklevel=5)
        return "quickdraw", images
    if announce:
        warnings.warn(f"{path} holds {len(images)} image file(s) and {len(npy)} .npy file(s) "
                      f"(e.g. {npy[0].name!r}): read as an image folder, the .npy files are ignored (write "
                      f"quickdraw:{path} to read them as QuickDraw data instead)", DataWarning, stacklevel=5)
    return "images", images


def _folder_by_majority(path: Path) -> Catalog:
    kind, images = _majority_kind(path, announce=True)
    if kind == "quickdraw":
        return quickdraw.quickdraw_catalog(path)
    return folders.folder_catalog(path, images)


def source_kind(source: str) -> DataSource:
    """The registered source ``source`` is read as (a file or a list of files: an image folder's)."""
    named = match_named(source) or match_folder(source)
    if named is not None:
        return named[0]
    path = Path(os.path.expanduser(source))
    return get_source(_majority_kind(path, announce=False)[0] if path.is_dir() else "images")


def natural_format(source: str) -> tuple[int, int]:
    """(image size, channels) training uses for ``source`` without --image-size/--channels."""
    kind = source_kind(source)
    return kind.size, kind.channels


def native_size(source: str) -> int | None:
    """The pixel size ``source``'s images really have, where the source fixes it (None: any size)."""
    return source_kind(source).native


def _val_indices(n: int, val_count: int | None, val_fraction: float | None) -> np.ndarray:
    if val_count is not None:
        return np.arange(min(val_count, n), dtype=np.int64)
    fraction = DEFAULT_VAL_FRACTION if val_fraction is None else val_fraction
    k = round(fraction * n)
    if fraction > 0 and n >= 2:
        k = min(max(k, 1), n - 1)
    perm = np.random.default_rng(SPLIT_SEED).permutation(n)
    return np.sort(perm[:k]).astype(np.int64)


def _select(resolved: _Resolved, split: str, val_count: int | None,
            val_fraction: float | None) -> list[tuple[Catalog, np.ndarray]]:
    train = resolved.train
    everything = np.arange(len(train), dtype=np.int64)
    if resolved.explicit_files:
        return [(train, everything)]
    if split == "all":
        parts = [(train, everything)]
        if resolved.official_val is not None:
            parts.append((resolved.official_val, np.arange(len(resolved.official_val), dtype=np.int64)))
        return parts
    if resolved.official_val is not None and val_count is None and val_fraction is None:
        if split == "val":
            return [(resolved.official_val, np.arange(len(resolved.official_val), dtype=np.int64))]
        return [(train, everything)]
    val = _val_indices(len(train), val_count, val_fraction)
    if split == "val":
        return [(train, val)]
    return [(train, np.setdiff1d(everything, val, assume_unique=True))]


def _materialize(catalog: Catalog, indices: np.ndarray, opts: DecodeOptions,
                 cache_dir: str | None) -> tuple[ImageSet, list[int]]:
    """Decode ``indices`` of ``catalog`` (or read them from the cache) → (ImageSet, skipped indices)."""
    if cache_dir is not None:
        store = cache.load_or_build(cache_dir, catalog, opts)
        pos = np.searchsorted(store.rows, indices)
        pos_ok = np.minimum(pos, max(len(store.rows) - 1, 0))
        present = (pos < len(store.rows)) & (store.rows[pos_ok] == indices) if len(store.rows) else \
            np.zeros(len(indices), dtype=bool)
        kept, rows = indices[present], pos[present]
        skipped = [int(i) for i in indices[~present]]
        images, index = select_rows(store.images, rows)  # a slice stays a memmap; else an index
        return ImageSet(images, catalog.labels[kept], [catalog.names[i] for i in kept],
                        catalog.class_names, index=index), skipped
    _check_memory(len(indices), opts, catalog.description)
    out = np.empty((len(indices), opts.channels, opts.image_size, opts.image_size), dtype=np.uint8)
    kept, skipped = catalog.fill(indices, out, opts)
    images = torch.from_numpy(out[: len(kept)] if len(kept) < len(indices) else out)
    return ImageSet(images, catalog.labels[kept], [catalog.names[i] for i in kept], catalog.class_names), skipped


def available_memory() -> int | None:
    """Bytes of memory this process can still allocate (MemAvailable; None where unknown)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _check_memory(count: int, opts: DecodeOptions, description: str) -> None:
    """Refuse before allocating a decoded set larger than the memory left (a MemoryError traceback, or
    the OOM killer, otherwise). The on-disk cache is memory-mapped and exempt."""
    need = count * opts.channels * opts.image_size ** 2
    free = available_memory()
    if free is not None and need > free:
        raise DataError(f"{description}: {count:,} images of {opts.channels}×{opts.image_size}×{opts.image_size} "
                        f"need {need / 2**30:.1f} GiB decoded, more than the {free / 2**30:.1f} GiB of memory "
                        f"available; use fewer images, a smaller --image-size or --cache DIR (memory-mapped)")


def _check_options(image_size: int, channels: int, split: str, val_count: int | None,
                   val_fraction: float | None, limit: int | None) -> None:
    if image_size < 1:
        raise UsageError(f"--image-size must be a positive number of pixels, got {image_size}")
    if image_size > MAX_IMAGE_SIZE:
        # Checked before decoding: the decoded set is allocated up front (N × C × S × S bytes).
        raise UsageError(f"--image-size {image_size} is larger than aecli decodes ({MAX_IMAGE_SIZE} px); "
                         "choose a smaller size")
    if channels not in (1, 3):
        raise UsageError(f"--channels must be 1 or 3, got {channels}")
    if split not in ("train", "val", "all"):
        raise UsageError(f"split must be train, val or all, got {split!r}")
    if val_count is not None and val_fraction is not None:
        raise UsageError("give --val-count or --val-fraction, not both")
    if val_count is not None and val_count < 0:
        raise UsageError(f"--val-count must be >= 0, got {val_count}")
    if val_fraction is not None and not 0.0 <= val_fraction < 1.0:
        raise UsageError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    if limit is not None and limit < 1:
        raise UsageError(f"the image limit must be >= 1, got {limit}")


def open_source(
    source: str | Sequence[str], *, image_size: int, channels: int, split: str = "train",
    val_count: int | None = None, val_fraction: float | None = None, data_root: str | None = None,
    download: bool = False, strict: bool | None = None, cache_dir: str | None = None, limit: int | None = None,
    workers: int | None = None, progress: bool = False,
) -> ImageSet:
    """Open ``source`` and return the ``split`` as uint8 images [N, channels, image_size, image_size].

    ``strict``: True makes unreadable files an error; False skips them with a warning that suggests
    ``--strict-data``; None (commands without that option) skips them with a warning that does not."""
    [data] = open_splits(source, (split,), image_size=image_size, channels=channels, val_count=val_count,
                         val_fraction=val_fraction, data_root=data_root, download=download, strict=strict,
                         cache_dir=cache_dir, limit=limit, workers=workers, progress=progress)
    return data


@dataclass
class Provenance:
    """Which data a command used and why: printed as one line and recorded in --json outputs."""

    source: str  # as opened ("" for an explicit list of files)
    training_source: str  # the checkpoint's recorded source ("" when unknown)
    same_as_training: bool  # compared by resolved identity (aecli.data.identity)
    defaulted: bool  # no --data: the checkpoint's training source
    split: str
    rule: str  # how the split is made, e.g. "the first 8 images in sorted order (--val-count 8)"
    split_size: int  # images in the split before any limit or --n

    def line(self, n: int) -> str:
        if self.defaulted:
            whose = "no --data: the checkpoint's training data"
        elif self.same_as_training:
            whose = "the checkpoint's training data"
        elif self.training_source:
            whose = f"not the checkpoint's training data, {self.training_source}"
        else:
            whose = "the checkpoint records no training data"
        origin = "as training held out" if self.same_as_training else "the default rule"
        if self.split == "files":
            return f"data: {self.source} · the given files, whole (no split) · N = {n}"
        of = f" of {self.split_size}" if n != self.split_size else ""
        rule = self.rule if self.split == "all" else f"{self.rule}, {origin}"
        return f"data: {self.source} ({whose}) · split {self.split}: {rule} · N = {n}{of}"

    def to_dict(self, n: int) -> dict[str, Any]:
        return {"source": self.source, "training_source": self.training_source,
                "same_as_training": self.same_as_training, "defaulted": self.defaulted, "split": self.split,
                "split_rule": self.rule, "split_size": self.split_size, "n": n}


def _split_rule(resolved: _Resolved, split: str, val_count: int | None, val_fraction: float | None) -> str:
    if split == "all":
        return "every image" + (" (official train then test)" if resolved.official_val is not None else "")
    if resolved.official_val is not None and val_count is None and val_fraction is None:
        return f"the dataset's official {'test' if split == 'val' else 'train'} split"
    side = "" if split == "val" else "all but "
    if val_count is not None:
        return f"{side}the first {val_count} images in sorted order (--val-count {val_count})"
    if val_fraction is None:
        return f"{side}a fixed pseudo-random {DEFAULT_VAL_FRACTION:.0%} (split seed {SPLIT_SEED})"
    return f"{side}a fixed pseudo-random {val_fraction:.0%} (--val-fraction {val_fraction:g}, split seed {SPLIT_SEED})"


def open_for(spec: DataSpec, source: str | Sequence[str] | None, *, checkpoint: Any = "the checkpoint",
             image_size: int | None = None, split: str = "auto", **kwargs: Any) -> ImageSet:
    """Open ``source`` the way a checkpoint expects it: its image size (unless overridden) and channels,
    and, when ``source`` is its training data (by resolved identity), the validation split that training
    held out — so `--split val` in every command means the images the model never trained on. No
    ``source``: the checkpoint's recorded training source, checked like any untrusted input.
    ``split="auto"`` (every command's default): ``val`` of the training data, ``all`` of other data.
    The result's ``provenance`` says which source, split rule and N, for the command's one-line report."""
    if split not in SPLIT_CHOICES:
        raise UsageError(f"--split must be one of {', '.join(SPLIT_CHOICES)}, got {split!r}")
    defaulted = not source
    if defaulted:
        source = spec.default_source(checkpoint)
    assert source is not None
    same = spec.is_training_source(source)
    if split == "auto":
        split = "val" if same else "all"
    try:
        data = open_source(source, image_size=image_size or spec.image_size, channels=spec.channels, split=split,
                           **spec.split_options(source), **kwargs)
    except DataError as exc:
        if not defaulted:
            raise
        raise DataError(f"{exc} (no --data: this is the training data recorded in {checkpoint}; pass --data SRC "
                        "to use other data)") from None
    data.provenance = Provenance(
        source=source if isinstance(source, str) else ", ".join(map(str, source)),
        training_source=spec.source, same_as_training=same, defaulted=defaulted,
        split=data.provenance.split, rule=data.provenance.rule, split_size=data.provenance.split_size)
    return data


def open_splits(
    source: str | Sequence[str], splits: Sequence[str], *, image_size: int, channels: int,
    val_count: int | None = None, val_fraction: float | None = None, data_root: str | None = None,
    download: bool = False, strict: bool | None = None, cache_dir: str | None = None, limit: int | None = None,
    workers: int | None = None, progress: bool = False,
) -> list[ImageSet]:
    """Several splits of one source (training's train and val) from a single listing: a folder of
    many files on a parallel filesystem is walked once, not once per split."""
    for split in splits:
        _check_options(image_size, channels, split, val_count, val_fraction, limit)
    resolved = _resolve(source, data_root, download)
    return [_open_split(resolved, split, image_size=image_size, channels=channels, val_count=val_count,
                        val_fraction=val_fraction, strict=strict, cache_dir=cache_dir, limit=limit,
                        workers=workers, progress=progress) for split in splits]


def _open_split(resolved: _Resolved, split: str, *, image_size: int, channels: int, val_count: int | None,
                val_fraction: float | None, strict: bool | None, cache_dir: str | None, limit: int | None,
                workers: int | None, progress: bool) -> ImageSet:
    parts = _select(resolved, split, val_count, val_fraction)
    split_size = sum(len(i) for _, i in parts)
    if limit is not None:
        capped, left = [], limit
        for catalog, idx in parts:
            capped.append((catalog, idx[:left]))
            left -= len(capped[-1][1])
        parts = [(c, i) for c, i in capped if len(i)] or capped[:1]
    opts = DecodeOptions(image_size, channels, workers or folders.default_workers(), progress)
    sets, skipped_names, listed, reasons = [], [], 0, {}
    for catalog, idx in parts:
        data, skipped = _materialize(catalog, idx, opts, cache_dir)
        sets.append(data)
        skipped_names += [catalog.names[i] for i in skipped]
        reasons.update({catalog.names[i]: catalog.reasons[i] for i in skipped if i in catalog.reasons})
        listed += len(idx)
    description = parts[0][0].description
    if skipped_names:
        shown = ", ".join(_named(s, reasons) for s in skipped_names[:_SHOW_SKIPPED])
        more = " …" if len(skipped_names) > _SHOW_SKIPPED else ""
        if strict:
            raise DataError(f"{len(skipped_names)} unreadable image file(s) in {description}: {shown}{more}; "
                            f"fix or remove them, or drop --strict-data to skip them")
        hint = " (use --strict-data to make this an error)" if strict is False else ""
        warnings.warn(f"skipped {len(skipped_names)} of {listed} image file(s) in {description} that could "
                      f"not be read: {shown}{more}{hint}", DataWarning, stacklevel=2)
    if listed == 0:
        raise DataError(f"the {split} split of {description} is empty; lower --val-count/--val-fraction "
                        f"or use a larger dataset")
    if sum(len(s) for s in sets) == 0:
        raise DataError(f"none of the {listed} image file(s) of {description} could be read "
                        f"(first: {skipped_names[0]!r}); check that they are valid images")
    source_id = _source_id(parts, opts, split, val_count, val_fraction, limit, resolved.explicit_files)
    data = concat(sets, source_id)
    data.source_id, data.skipped = source_id, skipped_names
    data.provenance = Provenance(
        source=description, training_source="", same_as_training=False, defaulted=False,
        split="files" if resolved.explicit_files else split,
        rule=_split_rule(resolved, split, val_count, val_fraction), split_size=split_size)
    return data


def _named(name: str, reasons: dict[str, str]) -> str:
    """'name' (why it was skipped), as far as this run decoded it (a cache hit knows only the name)."""
    why = reasons.get(name)
    return repr(name) + (f" ({why})" if why else "")


def _source_id(parts: list[tuple[Catalog, np.ndarray]], opts: DecodeOptions, split: str,
               val_count: int | None, val_fraction: float | None, limit: int | None, explicit: bool) -> str:
    """Stable identity of exactly these images (evaluate keys its FID reference statistics on it)."""
    text = json.dumps({
        "stores": [cache.store_key(c, opts.image_size, opts.channels) for c, _ in parts],
        "split": "files" if explicit else split, "val_count": val_count, "val_fraction": val_fraction,
        "limit": limit,
    })
    return hashlib.sha256(text.encode()).hexdigest()[:16]
