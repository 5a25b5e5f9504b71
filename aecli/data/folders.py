"""Image folders and explicit file lists: listing, class labels, and parallel decoding."""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
import warnings
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from aecli.data.catalog import Catalog, DecodeOptions
from aecli.data.decode import IMAGE_EXTENSIONS, decode_task
from aecli.errors import DataError
from aecli.progress import Progress

log = logging.getLogger(__name__)

_POOL_MIN_FILES = 512  # spawning workers costs ~1 s, the time to decode a few hundred small files


def _is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def walk_images(root: Path) -> list[tuple[str, int, int]]:
    """(relative posix path, size, mtime_ns) of every image file under ``root``, sorted by path.

    Follows symlinked folders (datasets are often linked in) but visits each real folder once, so a
    symlink loop ends. Hidden entries (".*", e.g. macOS "._x.jpg" resource forks) are ignored. A broken
    symlink with an image name is listed (size -1) so that it is counted as unreadable, not vanished.
    """
    found: list[tuple[str, int, int]] = []
    seen: set[str] = set()

    def visit(folder: Path, rel: str) -> None:
        real = os.path.realpath(folder)
        if real in seen:
            return
        seen.add(real)
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            return  # unreadable folder: nothing to list
        for entry in entries:
            if entry.name.startswith("."):
                continue
            child = f"{rel}/{entry.name}" if rel else entry.name
            try:
                is_dir = entry.is_dir()
            except OSError:
                is_dir = False
            if is_dir:
                visit(Path(entry.path), child)
            elif _is_image_name(entry.name):
                try:
                    st = entry.stat()
                    found.append((child, st.st_size, st.st_mtime_ns))
                except OSError:
                    found.append((child, -1, 0))

    visit(root, "")
    found.sort(key=lambda t: t[0])
    return found


def _identity(kind: str, entries: Sequence[tuple[str, int, int]]) -> str:
    h = hashlib.sha256(kind.encode())
    for rel, size, mtime in entries:
        h.update(f"\n{rel}\0{size}\0{mtime}".encode("utf-8", "surrogateescape"))
    return f"{kind}:{len(entries)}:{h.hexdigest()}"


def _slug(text: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in "-_" else "-" for c in text).strip("-")
    return cleaned[:40] or "data"


def folder_catalog(root: Path, entries: list[tuple[str, int, int]] | None = None) -> Catalog:
    """Every image under ``root``. When first-level sub-folders hold images they are the classes
    (sorted names → 0, 1, ...; deeper folders belong to their first-level folder) and images lying
    directly in ``root`` are ignored with a warning, as torchvision's ImageFolder does. Otherwise the
    folder is one unlabeled set. ``entries``: the listing, when the caller already walked ``root``."""
    entries = walk_images(root) if entries is None else entries
    if not entries:
        raise DataError(f"no images found in {root} (searched recursively for "
                        f"{', '.join(IMAGE_EXTENSIONS)}, any letter case); check the path")
    top = [e for e in entries if "/" not in e[0]]
    nested = [e for e in entries if "/" in e[0]]
    if nested:
        if top:
            warnings.warn(f"{root}: {len(top)} image(s) directly in the folder are ignored because its "
                          f"sub-folders are used as classes (e.g. {top[0][0]!r}); move them into a "
                          f"sub-folder to use them", stacklevel=3)
        entries = nested
        class_names = sorted({e[0].split("/", 1)[0] for e in entries})
        lookup = {c: i for i, c in enumerate(class_names)}
        labels = np.array([lookup[e[0].split("/", 1)[0]] for e in entries], dtype=np.int64)
    else:
        class_names = []
        labels = np.full(len(entries), -1, dtype=np.int64)
    names = [e[0] for e in entries]
    paths = [str(root / n) for n in names]
    reasons: dict[int, str] = {}
    return Catalog(f"folder {root}", _identity("folder", entries), names, labels, class_names,
                   file_fill(paths, f"folder {root}", reasons), _slug(root.name), reasons)


def files_catalog(files: Sequence[str]) -> Catalog:
    """Explicitly named image files, in the given order, unlabeled."""
    entries = []
    for f in files:
        p = Path(os.path.expanduser(f))
        if p.is_dir():
            raise DataError(f"{f} is a folder; pass it alone to use every image in it")
        if not p.exists() and not p.is_symlink():
            raise DataError(f"image file not found: {f}")
        try:
            st = p.stat()
            entries.append((str(p.resolve()), st.st_size, st.st_mtime_ns))
        except OSError:
            entries.append((str(p.absolute()), -1, 0))
    names = [str(f) for f in files]
    paths = [str(Path(os.path.expanduser(f))) for f in files]
    what = f"file {files[0]}" if len(files) == 1 else f"{len(files)} files"
    reasons: dict[int, str] = {}
    return Catalog(what, _identity("files", entries), names, np.full(len(files), -1, dtype=np.int64), [],
                   file_fill(paths, what, reasons), _slug(Path(files[0]).stem if len(files) == 1 else "files"),
                   reasons)


def default_workers() -> int:
    """CPUs this process may use (the affinity mask, which Slurm and taskset set), else os.cpu_count()."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def _decoded(tasks: list[tuple[str, int, int]], workers: int) -> Iterator[tuple[np.ndarray | None, str]]:
    if workers <= 1 or len(tasks) < _POOL_MIN_FILES:
        yield from map(decode_task, tasks)
        return
    # spawn, not fork: the parent holds torch's thread pools, and forking a threaded process can deadlock.
    # Workers import only aecli.data.decode (PIL + numpy), so they start in a fraction of a second.
    ctx = multiprocessing.get_context("spawn")
    workers = min(workers, len(tasks) // 8 or 1)
    chunk = max(1, min(64, len(tasks) // (workers * 8)))
    with ctx.Pool(workers) as pool:
        yield from pool.imap(decode_task, tasks, chunksize=chunk)


def file_fill(paths: Sequence[str], description: str, reasons: dict[int, str] | None = None):
    """The Catalog.fill for files: decode in parallel, write readable images compacted into ``out``;
    why each unreadable file was skipped goes into ``reasons`` (the catalog's, for the warning)."""

    def fill(indices: np.ndarray, out: np.ndarray, opts: DecodeOptions) -> tuple[np.ndarray, list[int]]:
        tasks = [(paths[int(i)], opts.image_size, opts.channels) for i in indices]
        kept: list[int] = []
        skipped: list[int] = []
        with Progress(len(tasks), f"Decoding {description}", enabled=opts.progress) as bar:
            for i, (arr, reason) in zip(indices, _decoded(tasks, opts.workers)):
                if arr is None:
                    log.debug("unreadable image %s: %s", paths[int(i)], reason)
                    if reasons is not None:
                        reasons[int(i)] = reason
                    skipped.append(int(i))
                else:
                    out[len(kept)] = arr
                    kept.append(int(i))
                bar.advance()
        return np.asarray(kept, dtype=np.int64), skipped

    return fill
