"""Input aecli did not write: files to open and text to print.

- ``regular_file``: a path is opened only when it is a regular file. Opening a FIFO blocks until a
  writer appears (forever), and a device such as /dev/zero reports size 0 and reads without end.
- ``printable``: text taken from a file (checkpoint metadata, class names, config values) is shown
  with control characters escaped, so a crafted value cannot clear the screen or set the window title.
- ``json_safe``: NaN and ±inf become None, so ``json.dumps(..., allow_nan=False)`` gives strict JSON.
"""

from __future__ import annotations

import math
import os
import stat
import unicodedata
from pathlib import Path
from typing import Any


def regular_file(path: str | os.PathLike[str]) -> str | None:
    """None when ``path`` (symlinks followed) is a regular file, else what it is ("a FIFO", …)."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        return exc.strerror or "unreadable"
    if stat.S_ISREG(mode):
        return None
    for test, what in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return what
    return "not a regular file"


def check_regular_file(path: str | os.PathLike[str], what: str) -> Path:
    """``path`` as a Path when it is a regular file; ValueError naming ``what`` and the problem otherwise
    (callers turn it into their own AecliError)."""
    problem = regular_file(path)
    if problem is not None:
        raise ValueError(f"{what} {path} is {problem}, not a regular file" if problem.startswith("a ")
                         else f"{what} {path}: {problem}")
    return Path(path)


def printable(text: Any) -> str:
    """``str(text)`` with control and format characters (ESC, CSI, BEL, bidi overrides…) escaped as
    ``\\xNN``/``\\uNNNN``; tabs and ordinary characters kept."""
    out = []
    for ch in str(text):
        if ch != "\t" and unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn"):
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
        else:
            out.append(ch)
    return "".join(out)


def json_safe(value: Any) -> Any:
    """A copy of ``value`` (dicts, lists, scalars) with non-finite floats replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value
