"""Atomic file writes: write a temp file beside the target, fsync, then ``os.replace``.

A crash, a kill -9 or a full disk mid-write leaves the previous file intact, never a half-written one.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from pathlib import Path
from typing import Iterator


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path`` atomically."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp makes 0600 files, and some writers (safetensors) re-create the file the same way: give
        # the result, once written, the mode a plain open() would (group-readable on shared storage).
        os.chmod(tmp_path, 0o666 & ~_umask())
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        os_error = _as_os_error(exc, target)
        if os_error is not None:
            raise os_error from exc
        raise


# safetensors reports a failed write as "… I/O error: File too large (os error 27)", not as OSError.
_OS_ERROR = re.compile(r"\(os error (\d+)\)")


def _as_os_error(exc: BaseException, path: Path) -> OSError | None:
    """A writer library's wrapped OS error (disk full, quota, EFBIG) as the OSError it is, so the CLI
    reports it like any other write failure (exit 1, the system's message and the path). A plain
    OSError that names no file (PIL's write to an open handle on a full disk) gets the target's path."""
    if isinstance(exc, OSError):
        if exc.filename is not None or exc.errno is None:
            return None
        return OSError(exc.errno, exc.strerror or os.strerror(exc.errno), str(path))
    match = _OS_ERROR.search(str(exc))
    if match is None:
        return None
    code = int(match.group(1))
    return OSError(code, os.strerror(code), str(path))


def write_text(path: str | os.PathLike[str], text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
