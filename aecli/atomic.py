"""Atomic file writes: write a temp file beside the target, fsync, then ``os.replace``.

A crash, a kill -9 or a full disk mid-write leaves the previous file intact, never a half-written one.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from pathlib import Path
from typing import Callable, Iterator

from aecli.errors import UsageError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# The temp file atomic_path writes beside ``target``: mkstemp's ".<target>.<random characters>.tmp".
_TEMP_NAME = re.compile(r"^\.(?P<target>.+)\.[A-Za-z0-9_]+\.tmp$")


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


def temp_target(name: str) -> str | None:
    """The file name whose atomic write left the temp file ``name``; None for any other name."""
    m = _TEMP_NAME.match(name)
    return m.group("target") if m else None


def remove_stale_temps(folder: str | os.PathLike[str], owned: Callable[[str], bool] = lambda target: True,
                       recursive: bool = False) -> None:
    """Delete what killed atomic writes left in ``folder``: temp files whose target name ``owned``
    accepts (a folder shared with other tools keeps theirs). They are never read, and the write that
    made one either never replaced its target or left the previous file whole, so this loses nothing."""
    for tmp in Path(folder).glob("**/.*.tmp" if recursive else ".*.tmp"):
        target = temp_target(tmp.name)
        if target is not None and owned(target):
            tmp.unlink(missing_ok=True)


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


def check_writable(out: str | os.PathLike[str], option: str = "--out") -> Path:
    """Refuse, before any work, an output path that cannot be written: under a file, in a read-only
    folder or file system. Bad input (exit 2), not a runtime failure found after the work is done."""
    p = Path(out)
    ancestor = p.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UsageError(f"{option} {out}: {ancestor} is a file, not a folder; choose another {option}")
    try:  # a real probe: access() says yes to root on read-only or pseudo file systems (/sys)
        with tempfile.TemporaryFile(dir=ancestor, prefix=".aecli-probe."):
            pass
    except OSError as exc:
        raise UsageError(f"{option} {out}: cannot write in {ancestor} ({exc.strerror}); choose another "
                         f"{option}") from None
    return p
