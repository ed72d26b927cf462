"""Progress of a long stage (an API fan-out, the student's answers, a fine-tune's steps, the ROUGE-L filter):
a bar with rate and ETA on a terminal, periodic log lines otherwise."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from typing import TextIO

log = logging.getLogger("lion.gateway")


class Progress:
    def __init__(self, total: int, label: str, stream: TextIO | None = None, interval_s: float = 15.0,
                 unit: str = "req", quiet_below_s: float = 0.0):
        """`quiet_below_s`: without a terminal, no closing line for a stage shorter than this (a quick one)."""
        self.total, self.label, self.interval_s, self.unit = total, label, interval_s, unit
        self.quiet_below_s = quiet_below_s
        self.done = self.failed = self.cached = 0
        self.level: Callable[[], str] | None = None
        """What the rate limiter lets out now ("612/1800 rpm"), asked for as the bar or a log line is drawn."""
        self._start = self._last_log = time.monotonic()
        stream = stream or sys.stderr
        self._bar = None
        if stream.isatty() and total:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=label, file=stream, unit=unit, dynamic_ncols=True)

    def update(self, ok: bool = True, cached: bool = False) -> None:
        self.done += 1
        self.failed += not ok
        self.cached += cached
        if self._bar is not None:
            self._bar.update(1)
            extra = {"level": self.level()} if self.level is not None else {}
            self._bar.set_postfix(failed=self.failed, cached=self.cached, **extra, refresh=False)
        elif time.monotonic() - self._last_log >= self.interval_s:
            self._last_log = time.monotonic()
            log.info(self.line())

    def line(self) -> str:
        elapsed = max(time.monotonic() - self._start, 1e-9)
        live = self.done - self.cached
        rate = live / elapsed
        eta = (self.total - self.done) / rate if rate > 0 else float("inf")
        eta_s = f"{eta:.0f}s" if eta != float("inf") else "?"
        level = f", level {self.level()}" if self.level is not None else ""
        return (f"{self.label}: {self.done}/{self.total} done ({self.failed} failed, {self.cached} from store), "
                f"{rate:.2f} {self.unit}/s{level}, ETA {eta_s}")

    def advance_to(self, done: int) -> None:
        """Move to `done` items (a count read from elsewhere, such as a fine-tune's log), never back."""
        while self.done < min(done, self.total):
            self.update()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self.total and time.monotonic() - self._start >= self.quiet_below_s:
            log.info(self.line())
