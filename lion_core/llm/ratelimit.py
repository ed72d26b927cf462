"""Client-side pacing for one endpoint: requests/minute, tokens/minute, and server-announced pauses.

Requests are spaced evenly (60 / rpm seconds apart) instead of being let out in bursts: providers
enforce per-minute limits over much shorter windows (a 600 RPM limit can be checked as 10 per
second), so even spacing is what reaches the budget without 429s. Tokens come from a bucket that
refills at tpm / 60 per second; a request takes its estimate up front and the difference is settled
from `usage` afterwards. `Retry-After` and `x-ratelimit-*` headers pause every request of the endpoint,
not only the one that got them.
"""

from __future__ import annotations

import asyncio
import email.utils
import re
import time
from collections.abc import Awaitable, Callable, Mapping

_DURATION = re.compile(r"(?P<n>\d+(?:\.\d+)?)(?P<u>ms|s|m|h)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
# Even spacing leaves a small margin so that network jitter cannot squeeze two requests into one window.
SPACING_MARGIN = 1.02
# A request let out late (busy event loop) may give the next one up to this share of an interval back,
# so timer lateness does not pile up into lost throughput, while no burst can form.
CATCH_UP = 0.25


def parse_duration(value: str | None) -> float | None:
    """Seconds from '1.5', '20ms', '6m0s', '1h2m3.5s'; None when unparseable."""
    if value is None:
        return None
    v = value.strip()
    try:
        return max(0.0, float(v))
    except ValueError:
        pass
    parts = list(_DURATION.finditer(v))
    if not parts or "".join(p.group(0) for p in parts) != v:
        return None
    return sum(float(p.group("n")) * _UNIT_S[p.group("u")] for p in parts)


def retry_after_seconds(headers: Mapping[str, str], now_epoch: float | None = None) -> float | None:
    """`retry-after-ms`, then `retry-after` as seconds or an HTTP date."""
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    ra = headers.get("retry-after")
    if ra is None:
        return None
    secs = parse_duration(ra)
    if secs is not None:
        return secs
    try:
        when = email.utils.parsedate_to_datetime(ra).timestamp()
    except (TypeError, ValueError):
        return None
    return max(0.0, when - (time.time() if now_epoch is None else now_epoch))


class RateLimiter:
    def __init__(
        self,
        requests_per_minute: int,
        tokens_per_minute: int,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ):
        self.interval = 60.0 / requests_per_minute * SPACING_MARGIN
        self.token_rate = tokens_per_minute / 60.0
        self.token_capacity = max(self.token_rate, 1.0)  # one second of budget: no minute-long bursts
        self._clock, self._sleep = clock, sleep
        self._tokens = self.token_capacity
        self._tokens_at = clock()
        self._next_slot = clock()
        self._paused_until = 0.0
        self._lock = asyncio.Lock()
        self.pauses = 0

    def _refill(self, now: float) -> None:
        self._tokens = min(self.token_capacity, self._tokens + (now - self._tokens_at) * self.token_rate)
        self._tokens_at = now

    async def acquire(self, est_tokens: int) -> None:
        """Wait for a request slot and its token estimate; FIFO across callers."""
        async with self._lock:
            while True:
                now = self._clock()
                self._refill(now)
                waits = [self._paused_until - now, self._next_slot - now]
                # A request larger than the bucket goes when the bucket is full, and leaves it in debt.
                need = min(est_tokens, self.token_capacity)
                if self._tokens < need:
                    waits.append((need - self._tokens) / self.token_rate)
                wait = max(waits)
                if wait <= 0:
                    break
                await self._sleep(wait)
            self._next_slot = max(now - CATCH_UP * self.interval, self._next_slot) + self.interval
            self._tokens -= est_tokens

    def settle(self, est_tokens: int, actual_tokens: int) -> None:
        """Correct the bucket once `usage` tells what a request really cost."""
        self._refill(self._clock())
        self._tokens += est_tokens - actual_tokens

    def pause(self, seconds: float) -> None:
        until = self._clock() + seconds
        if until > self._paused_until:
            self._paused_until = until
            self.pauses += 1

    def observe(self, headers: Mapping[str, str]) -> None:
        """Pause when the server says a budget is spent (x-ratelimit-remaining-* = 0 until reset)."""
        for kind in ("requests", "tokens"):
            remaining = headers.get(f"x-ratelimit-remaining-{kind}")
            reset = parse_duration(headers.get(f"x-ratelimit-reset-{kind}"))
            if remaining is None or reset is None:
                continue
            try:
                left = float(remaining)
            except ValueError:
                continue
            if left <= 0:
                self.pause(reset)

    def on_success(self) -> None:
        """A request was answered: an adaptive limiter may send a little faster."""

    def on_throttle(self) -> None:
        """The server said slow down (429, or 503/529 overloaded): an adaptive limiter backs off."""
