"""A one-line progress display on a TTY; silent when output goes to a file or pipe."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from nbferry.migrator.report import human_size


class Progress:
    """Callable as store progress: progress(done_bytes, total_bytes); with counts=True,
    progress(done_items, total_items)."""

    def __init__(
        self,
        label: str,
        stream: TextIO | None = None,
        min_interval: float = 0.1,
        counts: bool = False,
    ) -> None:
        self.label = label
        self.counts = counts
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty()
        self.min_interval = min_interval
        self._last = 0.0
        self._started = time.monotonic()

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if not self.enabled or (now - self._last < self.min_interval and done < total):
            return
        self._last = now
        if self.counts:
            self.stream.write(f"\r\033[K{self.label}: {done}/{total}")
            self.stream.flush()
            return
        pct = 100 * done / total if total else 100
        rate = done / max(now - self._started, 1e-6)
        self.stream.write(
            f"\r{self.label}: {pct:5.1f}%  {human_size(done)} / {human_size(total)}"
            f"  {human_size(rate)}/s "
        )
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\r\033[K")
            self.stream.flush()
