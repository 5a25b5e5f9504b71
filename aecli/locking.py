"""An exclusive lock on an output folder: one aecli process writes a run or sample folder at a time.

The lock is a small JSON file (host, pid, process start time, command) created atomically with
``os.link`` (which fails if the name exists, also on NFS). A lock whose process is gone is stale: a
kill -9 or a crashed node must not block the folder forever. A process is gone when, on this host,
its pid no longer runs or now belongs to a process that started later (the pid was reused). A lock
taken on another host cannot be checked from here: the error names that host and pid.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

from aecli.errors import UsageError

LOCK_FILE = ".aecli.lock"


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux /proc), or None where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22 counted after the "(comm)" field


def _alive(pid: int, started: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it runs
    now = _start_time(pid)
    return started is None or now is None or now == started


def _read(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("pid"), int) or not isinstance(data.get("host"), str):
        return None
    return data


class FolderLock:
    """``with FolderLock(folder, "train"):`` holds the folder or raises UsageError naming the holder."""

    def __init__(self, folder: str | os.PathLike[str], what: str) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self.what = what
        self.mine: dict | None = None

    def acquire(self) -> "FolderLock":
        me = {"host": socket.gethostname(), "pid": os.getpid(), "started": _start_time(os.getpid()),
              "command": " ".join(["aecli", *sys.argv[1:]])[:500], "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        fd, tmp = tempfile.mkstemp(prefix=f"{LOCK_FILE}.", suffix=".tmp", dir=self.folder)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(me, fh)
            for _ in range(2):  # a second try after removing a stale lock
                try:
                    os.link(tmp, self.path)
                    self.mine = me
                    return self
                except FileExistsError:
                    holder = _read(self.path)
                    if holder is None:
                        raise UsageError(f"{self.path} is not a lock aecli can read; if no aecli process writes "
                                         f"{self.folder}, delete that file and retry") from None
                    if holder["host"] != me["host"]:
                        raise UsageError(f"{self.folder} is in use by {holder.get('command', 'aecli')!r} (pid "
                                         f"{holder['pid']} on host {holder['host']}, since {holder.get('since')}); "
                                         f"wait for it, or if that process is gone delete {self.path}") from None
                    if _alive(holder["pid"], holder.get("started")):
                        raise UsageError(f"{self.folder} is in use by {holder.get('command', 'aecli')!r} (pid "
                                         f"{holder['pid']}, since {holder.get('since')}); wait for it to finish "
                                         f"or choose another output folder") from None
                    # Stale: its process is gone. Remove it only if it is still the lock we judged.
                    if _read(self.path) == holder:
                        with contextlib.suppress(FileNotFoundError):
                            self.path.unlink()
            raise UsageError(f"{self.folder} is being locked by another process right now; retry")
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)

    def release(self) -> None:
        if self.mine is not None and _read(self.path) == self.mine:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        self.mine = None

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.release()
