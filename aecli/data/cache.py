"""The decoded-image cache: a whole catalog decoded once into ``<slug>-<key>.npy`` (uint8 [N, C, S, S],
memory-mapped on reuse) plus a JSON sidecar. The key hashes the source identity (paths, sizes, mtimes,
or dataset name), image size and channels, so any change to the data makes a new entry; stale entries
are never reused (and not deleted: remove the folder to reclaim space).

Both files are written atomically and the sidecar last: it is the commit marker, so a crash mid-build
leaves no entry that looks valid. One file instead of thousands is also what parallel filesystems
(Lustre, GPFS) want.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aecli.atomic import atomic_path, write_text
from aecli.data.catalog import Catalog, DecodeOptions

FORMAT = "aecli-image-cache"
VERSION = 1


@dataclass
class CachedStore:
    images: np.ndarray  # memmap uint8 [k, C, S, S]: the readable items, in catalog order
    rows: np.ndarray  # int64 [k]: catalog index of each stored row (ascending)
    skipped: list[int]  # catalog indices of unreadable items
    path: Path


def store_key(catalog: Catalog, image_size: int, channels: int) -> str:
    text = json.dumps({"v": VERSION, "id": catalog.identity, "size": image_size, "channels": channels})
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def paths_for(cache_dir: str | Path, catalog: Catalog, key: str) -> tuple[Path, Path]:
    stem = f"{catalog.slug}-{key}"
    return Path(cache_dir) / f"{stem}.npy", Path(cache_dir) / f"{stem}.json"


def _index_list(value: Any, n: int) -> list[int] | None:
    """A strictly ascending list of catalog indices in [0, n), or None when it is anything else."""
    if not isinstance(value, list) or not all(type(v) is int for v in value):
        return None
    if any(not 0 <= v < n for v in value) or any(a >= b for a, b in zip(value, value[1:])):
        return None
    return value


def _load(npy: Path, sidecar: Path, key: str, shape: tuple[int, ...]) -> tuple[CachedStore | None, str]:
    """(the entry, "") if it is complete and consistent, else (None, what is wrong): rebuild it.

    The sidecar is checked as untrusted input: a damaged one (edited, truncated, another tool's) must
    neither crash nor mark good files unreadable."""
    n = shape[0]
    try:
        meta = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return None, f"unreadable sidecar ({type(exc).__name__})"
    if not isinstance(meta, dict):
        return None, "sidecar is not a JSON object"
    if meta.get("format") != FORMAT or meta.get("version") != VERSION or meta.get("key") != key:
        return None, "sidecar of another format or key"
    count, rows, skipped = meta.get("count"), meta.get("rows"), _index_list(meta.get("skipped_rows"), n)
    rows = list(range(count)) if rows is None and type(count) is int and count == n else _index_list(rows, n)
    if type(count) is not int or rows is None or skipped is None or len(rows) != count \
            or len(rows) + len(skipped) != n or set(rows) & set(skipped):
        return None, "inconsistent rows/count/skipped_rows"
    try:
        # mode "c" (copy-on-write): writable as far as torch is concerned, yet the file never changes.
        images = np.load(npy, mmap_mode="c", allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        return None, f"unreadable image file ({type(exc).__name__})"
    if images.dtype != np.uint8 or tuple(images.shape[1:]) != shape[1:] or images.shape[0] < count:
        return None, "image file of the wrong shape"
    return CachedStore(images[:count], np.asarray(rows, dtype=np.int64), skipped, npy), ""


def load_or_build(cache_dir: str | Path, catalog: Catalog, opts: DecodeOptions) -> CachedStore:
    key = store_key(catalog, opts.image_size, opts.channels)
    npy, sidecar = paths_for(cache_dir, catalog, key)
    n = len(catalog)
    shape = (n, opts.channels, opts.image_size, opts.image_size)
    if sidecar.exists():
        found, damage = _load(npy, sidecar, key, shape)
        if found is not None:
            return found
        warnings.warn(f"cache entry {sidecar} is damaged ({damage}); rebuilding it", stacklevel=3)
    need = n * opts.channels * opts.image_size ** 2
    existing = Path(cache_dir).absolute()
    while not existing.exists():  # the folder is created on write; measure the disk it will be on
        existing = existing.parent
    free = shutil.disk_usage(existing).free
    if need > free:  # checked before decoding: a full disk after hours of decoding helps no one
        raise OSError(28, f"No space left on device: the cache entry needs {need / 2**30:.1f} GiB, "
                          f"{free / 2**30:.1f} GiB free", str(npy))
    with atomic_path(npy) as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
        kept, skipped = catalog.fill(np.arange(n, dtype=np.int64), out, opts)
        out.flush()
        del out  # unmap before the rename
    # Unreadable files leave unused rows at the end of the file; "count" says how many are real.
    meta = {
        "format": FORMAT, "version": VERSION, "key": key, "source": catalog.description,
        "identity": catalog.identity, "image_size": opts.image_size, "channels": opts.channels,
        "count": len(kept), "rows": None if len(kept) == n else kept.tolist(),
        "names": [catalog.names[i] for i in kept], "labels": catalog.labels[kept].tolist(),
        "class_names": catalog.class_names, "skipped": [catalog.names[i] for i in skipped],
        "skipped_rows": skipped,
    }
    write_text(sidecar, json.dumps(meta, ensure_ascii=False))
    found, damage = _load(npy, sidecar, key, shape)
    assert found is not None, f"cache entry {npy} unreadable right after writing: {damage}"
    return found
