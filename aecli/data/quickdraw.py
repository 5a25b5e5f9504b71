"""QuickDraw: a folder of ``<class>.npy`` files, each N×784 uint8 28×28 bitmaps (seed 004)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from aecli.data.catalog import Catalog, array_fill
from aecli.errors import DataError
from aecli.untrusted import regular_file

_PREFIX = "full_numpy_bitmap_"  # Google's file names: full_numpy_bitmap_cat.npy → class "cat"


def npy_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() == ".npy" and not p.name.startswith("."))


def quickdraw_catalog(folder: Path) -> Catalog:
    files = npy_files(folder)
    arrays, class_names = [], []
    identity = hashlib.sha256(b"quickdraw")
    for f in files:
        problem = regular_file(f)
        if problem is not None:  # a FIFO would block np.load forever
            raise DataError(f"cannot read QuickDraw file {f}: {problem}; remove it or give a folder of .npy arrays")
        try:
            arr = np.load(f, mmap_mode="r", allow_pickle=False)  # mapped: only decoded rows are read
        except (OSError, ValueError, EOFError) as exc:  # EOFError: an empty or cut file
            raise DataError(f"cannot read QuickDraw file {f}: {exc or type(exc).__name__}; expected a NumPy "
                            f".npy array") from None
        if arr.dtype != np.uint8 or arr.ndim != 2 or arr.shape[1] != 784:
            raise DataError(f"{f} holds {arr.dtype} {arr.shape}; QuickDraw files must be N×784 uint8 "
                            f"bitmaps (numpy_bitmap format)")
        arrays.append(arr)
        name = f.stem[len(_PREFIX):] if f.stem.startswith(_PREFIX) else f.stem
        class_names.append(name)
        st = f.stat()
        identity.update(f"\n{f.name}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    counts = np.array([len(a) for a in arrays], dtype=np.int64)
    if counts.sum() == 0:
        raise DataError(f"the QuickDraw files in {folder} hold no drawings")
    offsets = np.concatenate([[0], np.cumsum(counts)])
    labels = np.repeat(np.arange(len(arrays), dtype=np.int64), counts)
    names = [f"{files[c].name}:{r}" for c in range(len(arrays)) for r in range(counts[c])]

    def rows(idx: np.ndarray) -> torch.Tensor:
        idx = np.asarray(idx, dtype=np.int64)
        cls = np.searchsorted(offsets, idx, side="right") - 1
        out = np.empty((len(idx), 784), dtype=np.uint8)
        for c in np.unique(cls):
            sel = cls == c
            out[sel] = arrays[c][idx[sel] - offsets[c]]
        return torch.from_numpy(out.reshape(-1, 1, 28, 28))

    return Catalog(f"QuickDraw folder {folder}", f"quickdraw:{identity.hexdigest()}", names, labels,
                   class_names, array_fill(rows), "quickdraw")
