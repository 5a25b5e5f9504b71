"""Which data a ``--data`` value names, independent of how it is spelled, and the checks a source
recorded in a checkpoint must pass before a command opens it by default.

Torch-free on purpose: aecli.data.spec (read by ``aecli info`` and every ``--help``) uses it.

Two spellings are the same data when their keys are equal: ``digits`` and ``DIGITS``; ``shapes`` and
``shapes:2048``; ``cifar-10`` and ``cifar10``; ``/abs/ffhq``, ``/abs/ffhq/``, ``../abs/ffhq`` and a
symlink to it (paths are compared resolved). The validation split a run held out applies exactly when
the keys match, so `--split val` never mixes training images into a score because of a trailing slash.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

from aecli.data.registry import match_folder, match_named
from aecli.errors import DataError, UsageError

MAX_RECORDED_SOURCE = 4096  # characters: a path longer than PATH_MAX is not one a run trained on
# Folders a recorded source may not name: walking them reads the whole machine or blocks on devices.
_FORBIDDEN_ROOTS = ("/proc", "/sys", "/dev")


def named_set(source: str) -> str | None:
    """The canonical name of a named set (``digits``, ``shapes:N``, ``mnist``…), or None."""
    found = match_named(source)
    return found[1] if found else None


def source_key(source: str | Sequence[str] | None) -> str | None:
    """Identity of a ``--data`` value: ``digits``, ``shapes:2048``, ``mnist``, ``path:/real/path``.
    None for no source and for an explicit list of files (those are used whole, never split)."""
    if not source or not isinstance(source, str):
        return None
    named = named_set(source)
    if named is not None:
        return named
    explicit = match_folder(source)
    path = explicit[1] if explicit else source
    return "path:" + os.path.realpath(os.path.expanduser(path))


def resolved_path(source: str) -> str:
    """The absolute, symlink-free path a path source names ("" for a named set): recorded at training
    time so a relative ``--data`` still finds (and matches) the data from another working folder."""
    key = source_key(source)
    return key[len("path:"):] if key and key.startswith("path:") else ""


def same_source(a: str | Sequence[str] | None, b: str | Sequence[str] | None) -> bool:
    ka, kb = source_key(a), source_key(b)
    return ka is not None and ka == kb


def check_recorded_source(source: Any, checkpoint: Any) -> str:
    """A checkpoint's recorded ``data.source`` is untrusted input (a file can say anything): the same
    checks as ``--data`` (shapes:N bounds), plus no control characters and no system folders, before it
    becomes a command's default data."""
    if not isinstance(source, str) or not source.strip():
        raise UsageError(f"{checkpoint} does not record its training data source; pass --data SRC")
    if len(source) > MAX_RECORDED_SOURCE or any(ord(c) < 32 or ord(c) == 127 for c in source):
        raise DataError(f"{checkpoint} records an implausible training data source ({len(source)} characters"
                        f"{', with control characters' if len(source) <= MAX_RECORDED_SOURCE else ''}); "
                        "pass --data SRC")
    try:
        if named_set(source) is not None:  # also bounds shapes:N
            return source
    except UsageError as exc:
        raise DataError(f"{checkpoint} records {source!r} as its training data: {exc}; or pass --data SRC") from None
    real = resolved_path(source)
    if real == os.path.sep or any(real == r or real.startswith(r + os.path.sep) for r in _FORBIDDEN_ROOTS):
        raise DataError(f"{checkpoint} records {source!r} as its training data, a system folder aecli will not "
                        "read by default; pass --data SRC")
    return source
