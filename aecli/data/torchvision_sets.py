"""torchvision datasets by name. Nothing is fetched unless ``download=True``: offline machines (compute
nodes) get a DataError that says where the files must be and how to get them there."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from aecli.data.catalog import Catalog, array_fill
from aecli.data.folders import file_fill
from aecli.errors import DataError

# name → (torchvision class, folder under data_root that torchvision reads, what lives there)
_SETS = {
    "mnist": ("MNIST", "MNIST/raw", "train-images-idx3-ubyte etc."),
    "fashion-mnist": ("FashionMNIST", "FashionMNIST/raw", "train-images-idx3-ubyte etc."),
    "cifar10": ("CIFAR10", "cifar-10-batches-py", "data_batch_1 … data_batch_5, test_batch, batches.meta"),
    "celeba": ("CelebA", "celeba", "img_align_celeba/ and list_eval_partition.txt, list_attr_celeba.txt, …"),
}


def _open(name: str, root: Path, official_split: str, download: bool):
    import torchvision.datasets as tvd

    cls_name, folder, contents = _SETS[name]
    cls = getattr(tvd, cls_name)
    try:
        if name == "celeba":
            split = {"train": "train", "val": "valid"}[official_split]
            return cls(str(root), split=split, target_type=[], download=download)
        return cls(str(root), train=official_split == "train", download=download)
    except (RuntimeError, OSError) as exc:
        where = root / folder
        if download:
            raise DataError(f"could not download {name} into {root}: {str(exc).strip().splitlines()[0]}; "
                            f"check the internet connection, or copy the files to {where}") from None
        raise DataError(f"{name} is not in {where} (expected {contents}); run once with --download on a "
                        f"machine with internet access (--data-root {root}), or copy the files there") from None


def torchvision_catalogs(name: str, data_root: str | None, download: bool) -> tuple[Catalog, Catalog]:
    """(official train split, official test split — CelebA: its "valid" partition) of ``name``."""
    root = Path(os.path.expanduser(data_root or "./data"))
    return tuple(_catalog(name, root, s, download) for s in ("train", "val"))  # type: ignore[return-value]


def _catalog(name: str, root: Path, split: str, download: bool) -> Catalog:
    ds = _open(name, root, split, download)
    official = {"train": "train", "val": "valid" if name == "celeba" else "test"}[split]
    description = f"{name} ({official} split, {root})"
    identity = f"torchvision:{name}:{official}"
    if name == "celeba":
        folder = Path(ds.root) / ds.base_folder / "img_align_celeba"
        files = list(ds.filename)
        return Catalog(description, f"{identity}:{len(files)}", [f"celeba:{f}" for f in files],
                       np.full(len(files), -1, dtype=np.int64), [],
                       file_fill([str(folder / f) for f in files], description), f"celeba-{official}")
    data = ds.data if isinstance(ds.data, torch.Tensor) else torch.from_numpy(np.asarray(ds.data))
    data = data[:, None] if data.ndim == 3 else data.permute(0, 3, 1, 2)  # → [N, C, h, w]
    data = data.contiguous()
    labels = np.asarray(ds.targets, dtype=np.int64)
    names = [f"{name}:{official}:{i}" for i in range(len(labels))]
    fill = array_fill(lambda idx: data[torch.from_numpy(np.asarray(idx, dtype=np.int64))])
    return Catalog(description, f"{identity}:{len(labels)}", names, labels, list(ds.classes), fill,
                   f"{name}-{official}")
