"""A tiny progress bar for the command line: drawn on a terminal, silent otherwise.

Small enough not to need tqdm as a dependency: one line on stderr, redrawn in
place with ``\\r``, showing done/total, the current item and the elapsed time.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO


class Progress:
    """``with Progress(total, "bench") as bar: bar.update(label); ...; bar.advance()``.

    Args:
        total: number of items.
        description: shown before the bar.
        enabled: draw at all; ``None`` draws only when ``stream`` is a terminal.
        stream: where to draw (default stderr, so stdout stays clean for tables/pipes).
    """

    WIDTH = 24

    def __init__(
        self,
        total: int,
        description: str,
        enabled: bool | None = None,
        stream: TextIO | None = None,
    ) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.total = max(total, 1)
        self.description = description
        self.done = 0
        self.label = ""
        self.start = time.perf_counter()
        self._drawn = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    def __enter__(self) -> Progress:
        self._draw()
        if self.enabled:
            # Redraw each second so the elapsed time moves while one long item runs.
            self._ticker = threading.Thread(target=self._tick, daemon=True)
            self._ticker.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
        if self.enabled and self._drawn:
            with self._lock:
                self.stream.write("\r" + " " * self._drawn + "\r")
                self.stream.flush()

    def _tick(self) -> None:
        while not self._stop.wait(1.0):
            self._draw()

    def update(self, label: str) -> None:
        """Name the item being worked on now."""
        self.label = label
        self._draw()

    def advance(self, n: int = 1) -> None:
        self.done = min(self.total, self.done + n)
        self._draw()

    def write(self, line: str, file: TextIO | None = None) -> None:
        """Print a line above the bar (to ``file``, default stdout)."""
        with self._lock:
            if self.enabled and self._drawn:
                self.stream.write("\r" + " " * self._drawn + "\r")
                self.stream.flush()
                self._drawn = 0
            print(line, file=file or sys.stdout, flush=True)
        self._draw()

    def _draw(self) -> None:
        if not self.enabled:
            return
        with self._lock:
            self._draw_locked()

    def _draw_locked(self) -> None:
        filled = round(self.WIDTH * self.done / self.total)
        elapsed = time.perf_counter() - self.start
        rate = ""
        if self.done and elapsed > 0:  # items/s, and the time left at that rate
            per_second = self.done / elapsed
            left = (self.total - self.done) / per_second
            rate = f" {per_second:.3g}/s ETA {left:.0f}s"
        line = (
            f"{self.description} [{'#' * filled}{'.' * (self.WIDTH - filled)}] "
            f"{self.done}/{self.total} {elapsed:5.0f}s{rate} {self.label}"
        )
        pad = max(0, self._drawn - len(line))
        self.stream.write("\r" + line + " " * pad)
        self.stream.flush()
        self._drawn = len(line)
