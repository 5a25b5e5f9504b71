"""Image data for aecli: every source (folders, files, QuickDraw, torchvision sets, embedded digits and
shapes) becomes one uint8 store, decoded once, optionally cached on disk, and batched on the device.

Exports are resolved lazily (PEP 562): ``aecli.checkpoint.format`` imports ``aecli.data.spec``, and that
must not pull in torch, or ``aecli info`` and ``aecli --help`` would pay for it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aecli.data.imageset import ImageSet
    from aecli.data.loader import BatchLoader, to_model_input
    from aecli.data.sources import natural_format, open_for, open_source, open_splits

_EXPORTS = {
    "ImageSet": "aecli.data.imageset",
    "BatchLoader": "aecli.data.loader",
    "to_model_input": "aecli.data.loader",
    "open_for": "aecli.data.sources",
    "open_source": "aecli.data.sources",
    "open_splits": "aecli.data.sources",
    "natural_format": "aecli.data.sources",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'aecli.data' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
