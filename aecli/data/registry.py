"""Name → data source registry: every kind of ``--data`` aecli reads, declared once.

A source declares how a ``--data`` value names it, the size and channels training uses when
``--image-size``/``--channels`` are not given, and the function that lists its items (its Catalog, see
aecli.data.catalog; the README's Data table says what each source is). Adding a source is one module with that function plus one ``register_source``
call below. The opener is named as "module:function" and imported only when the source is opened:
this registry is read by aecli.data.identity, which must stay torch-free (``aecli --help``, ``info``).

Two ways a source is named:
- a named set (``folder=False``): its name or an alias, case-insensitive; ``counted`` sets also take
  ``name:N`` (the first N images). The opener gets (canonical key, data_root, download) and returns
  (train catalog, official validation catalog or None).
- a way to read a folder (``folder=True``): ``name:DIR``. The opener gets the folder and returns its
  catalog. A bare folder path is read as whichever folder kind it holds more files of
  (aecli.data.sources).
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from typing import Any, Callable

from aecli.errors import UsageError


@dataclass(frozen=True)
class DataSource:
    name: str
    size: int  # natural image size: what training uses without --image-size
    channels: int  # natural channels: what training uses without --channels
    opener: str  # "module:function" (see the module docstring for its signature)
    native: int | None = None  # the pixel size the stored images really have, when fixed
    aliases: tuple[str, ...] = ()
    counted: tuple[int, int] | None = None  # (default N, largest N) of ``name:N``
    folder: bool = False

    def open(self, *args: Any) -> Any:
        module, _, function = self.opener.partition(":")
        opener: Callable[..., Any] = getattr(importlib.import_module(module), function)
        return opener(*args)

    def count(self, spec: str) -> int:
        """N of ``name``/``name:N`` for a counted set, bounded before anything is allocated."""
        assert self.counted is not None
        default, largest = self.counted
        text = spec.strip().lower().partition(":")[2] or str(default)
        if not text.isdigit() or int(text) < 1:
            raise UsageError(f"{self.name}:N needs a positive image count, got {spec!r}")
        if int(text) > largest:
            raise UsageError(f"{self.name}:{text} is more than the {largest:,} {self.name} aecli draws; "
                             f"give {self.name}:N with N <= {largest}")
        return int(text)


_SOURCES: dict[str, DataSource] = {}


def register_source(source: DataSource) -> DataSource:
    for name in (source.name, *source.aliases):
        if name in _SOURCES or any(name in s.aliases for s in _SOURCES.values()):
            raise ValueError(f"data source {name!r} registered twice")
    _SOURCES[source.name] = source
    return source


def sources() -> list[DataSource]:
    return list(_SOURCES.values())


def named_sets() -> list[DataSource]:
    return [s for s in _SOURCES.values() if not s.folder]


def get_source(name: str) -> DataSource:
    return _SOURCES[name]


def match_named(spec: str) -> tuple[DataSource, str] | None:
    """(source, canonical key) of a named set (``digits``, ``shapes:2048``, ``cifar10`` for ``CIFAR-10``),
    None for anything else. A counted set's N is checked (UsageError when out of bounds)."""
    key = spec.strip().lower()
    for source in named_sets():
        if key == source.name or key in source.aliases:
            return source, (f"{source.name}:{source.count(key)}" if source.counted else source.name)
        if source.counted and key.startswith(source.name + ":"):
            return source, f"{source.name}:{source.count(key)}"
    return None


def match_folder(spec: str) -> tuple[DataSource, str] | None:
    """(folder source, folder) of ``name:DIR``; None for anything else (also for a path that really is
    called ``images:x``)."""
    kind, colon, rest = spec.partition(":")
    source = _SOURCES.get(kind.lower())
    if colon and source is not None and source.folder and not os.path.exists(os.path.expanduser(spec)):
        return source, rest
    return None


# -- the sources aecli ships ---------------------------------------------------------------------------
# Named sets are tried in this order, then `name:DIR`, then a path (aecli.data.sources).
_TORCHVISION = "aecli.data.torchvision_sets:torchvision_catalogs"
# digits are 8×8 but train at 32 px so every convolutional family can take them.
register_source(DataSource("digits", 32, 1, "aecli.data.builtin:digits_catalogs", native=8))
register_source(DataSource("shapes", 32, 3, "aecli.data.builtin:shapes_catalogs", counted=(2048, 1_000_000)))
register_source(DataSource("mnist", 28, 1, _TORCHVISION, native=28))
register_source(DataSource("fashion-mnist", 28, 1, _TORCHVISION, native=28, aliases=("fashion_mnist", "fashionmnist")))
register_source(DataSource("cifar10", 32, 3, _TORCHVISION, native=32, aliases=("cifar-10",)))
register_source(DataSource("celeba", 64, 3, _TORCHVISION))
register_source(DataSource("quickdraw", 28, 1, "aecli.data.quickdraw:quickdraw_catalog", native=28, folder=True))
register_source(DataSource("images", 64, 3, "aecli.data.folders:folder_catalog", folder=True))
