"""Progress for long loops, the same in every command: a rich bar in a terminal, plain timestamped
lines otherwise (batch logs get no redraws)."""

from __future__ import annotations

import sys
import time
from typing import Any


class Progress:
    """Progress for long loops: a rich bar in a terminal, a plain line every ~10 % (and at the end)
    otherwise, so batch logs stay readable. Silent for short jobs (``total < min_total``)."""

    def __init__(self, total: int, description: str, *, enabled: bool = True, min_total: int = 2) -> None:
        self.total, self.description, self.done = total, description, 0
        self.enabled = enabled and total >= min_total
        self._bar: Any = None
        self._next_report = 0.1
        self._started = time.time()
        if self.enabled and sys.stdout.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn, \
                TimeRemainingColumn

            self._bar = RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TimeRemainingColumn(), transient=True)
            self._task = self._bar.add_task(description, total=total)
            self._bar.start()

    def advance(self, k: int = 1) -> None:
        self.done += k
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.advance(self._task, k)
        elif self.done >= self._next_report * self.total or self.done >= self.total:
            rate = self.done / max(1e-9, time.time() - self._started)
            print(f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] {self.description}: {self.done}/{self.total} "
                  f"({rate:.1f}/s)", flush=True)
            while self._next_report * self.total <= self.done:
                self._next_report += 0.1

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
