"""ImageSet: a uint8 image store (in-memory tensor or on-disk memmap) with labels and names."""

from __future__ import annotations

import warnings
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset


def _as_tensor(store: Any) -> torch.Tensor:
    """A tensor sharing memory with ``store``. Read-only arrays are wrapped without a copy: we never write."""
    if isinstance(store, torch.Tensor):
        return store
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(store)


def _as_index(indices: Any) -> torch.Tensor:
    if isinstance(indices, torch.Tensor):
        return indices.to(device="cpu", dtype=torch.int64).reshape(-1)
    return torch.as_tensor(np.asarray(indices, dtype=np.int64).reshape(-1))


class ImageSet(Dataset):
    """N images as uint8 [N, C, H, W] with int64 labels (-1 = unlabeled) and a name per item.

    A subset of a memory-mapped store keeps the memmap and an index instead of copying rows: a 90 %
    train split of a 13 GB cache must not be read into RAM. ``images`` materialises such a subset on
    first access; the loader and ``__getitem__`` never need to (they go through ``take``).
    """

    def __init__(
        self,
        images: Any,
        labels: Any = None,
        names: list[str] | None = None,
        class_names: list[str] | None = None,
        skipped: list[str] | None = None,
        source_id: str = "",
        *,
        index: Any = None,
    ) -> None:
        if len(tuple(getattr(images, "shape", ()))) != 4 or str(images.dtype) not in ("uint8", "torch.uint8"):
            raise ValueError(f"ImageSet needs uint8 images [N, C, H, W], got {getattr(images, 'dtype', '?')} "
                             f"{tuple(getattr(images, 'shape', ()))}")
        self._store = images
        self._store_t = _as_tensor(images)
        self._index = None if index is None else _as_index(index)
        self._images: Any = None if self._index is not None else images
        n = len(self._index) if self._index is not None else int(images.shape[0])
        self.labels = (torch.full((n,), -1, dtype=torch.int64) if labels is None
                       else _as_index(labels))
        if len(self.labels) != n:
            raise ValueError(f"{len(self.labels)} labels for {n} images")
        self.names = list(names) if names is not None else [f"memory:{i}" for i in range(n)]
        if len(self.names) != n:
            raise ValueError(f"{len(self.names)} names for {n} images")
        self.class_names = list(class_names or [])
        self.skipped = list(skipped or [])
        self.source_id = source_id
        # Where these images came from and by which split rule (aecli.data.sources.Provenance); kept
        # by subset() so a command's one-line report can name it after its own --n selection.
        self.provenance: Any = None

    # --- shape -------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.labels)

    @property
    def channels(self) -> int:
        return int(self._store.shape[1])

    @property
    def image_size(self) -> int:
        return int(self._store.shape[2])

    @property
    def nbytes(self) -> int:
        return len(self) * self.channels * int(self._store.shape[2]) * int(self._store.shape[3])

    @property
    def images(self) -> Any:
        """uint8 [N, C, H, W]: the tensor or memmap itself, or (for an indexed subset) a copy made once."""
        if self._images is None:
            self._images = self.take(torch.arange(len(self)))
        return self._images

    # --- access ------------------------------------------------------------------------------------
    def take(self, indices: Any) -> torch.Tensor:
        """uint8 [B, C, H, W] CPU tensor of the given items (one gather, no per-image work)."""
        idx = _as_index(indices)
        if self._index is not None:
            idx = self._index[idx]
        return self._store_t.index_select(0, idx)

    def tensor(self) -> torch.Tensor:
        """All images as one uint8 CPU tensor (shares memory with the store when it can)."""
        if self._index is None:
            return self._store_t
        return self.take(torch.arange(len(self)))

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for {n} images")
        i %= n
        j = int(self._index[i]) if self._index is not None else i
        return self._store_t[j].clone(), int(self.labels[i])

    def subset(self, indices: Any) -> "ImageSet":
        idx = _as_index(indices)
        if len(idx) and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"subset indices out of range for {len(self)} images")
        rows = self._index[idx] if self._index is not None else idx
        store, index = select_rows(self._store, rows)
        out = ImageSet(store, self.labels[idx], [self.names[int(i)] for i in idx], self.class_names,
                       self.skipped, self.source_id, index=index)
        out.provenance = self.provenance
        return out


def select_rows(store: Any, rows: Any) -> tuple[Any, torch.Tensor | None]:
    """(store, index) addressing ``rows`` of ``store``: a plain slice when the rows are consecutive (a
    memmap stays a memmap, nothing is copied), else the whole store plus an index."""
    rows = _as_index(rows)
    m = len(rows)
    if m == 0:
        return store[:0], None
    first = int(rows[0])
    if int(rows[-1]) - first == m - 1 and bool((rows.diff() == 1).all()):
        return store[first : first + m], None
    return store, rows


def concat(parts: Sequence[ImageSet], source_id: str = "") -> ImageSet:
    """One in-memory ImageSet holding ``parts`` in order (class names must agree)."""
    if len(parts) == 1:
        return parts[0]
    images = torch.cat([p.tensor() for p in parts])
    labels = torch.cat([p.labels for p in parts])
    names = [n for p in parts for n in p.names]
    skipped = [s for p in parts for s in p.skipped]
    return ImageSet(images, labels, names, parts[0].class_names, skipped, source_id)
