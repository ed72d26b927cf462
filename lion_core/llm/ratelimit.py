"""Client-side pacing for one endpoint: requests/minute, tokens/minute, and server-announced pauses.

Requests are spaced evenly (60 / rpm seconds apart) instead of being let out in bursts: providers
enforce per-minute limits over much shorter windows (a 600 RPM limit can be checked as 10 per
second), so even spacing is what reaches the budget without 429s. Tokens come from a bucket that
refills at tpm / 60 per second; a request takes its estimate up front and the difference is settled
from `usage` afterwards. `Retry-After` and `x-ratelimit-*` headers pause every request of the endpoint,
not only the one that got them.

An adaptive limiter treats the configured limits as ceilings and looks for the provider's real limit below
them (see `RateLimiter`): a user who guessed the limits too high gets a handful of 429s, not one every
second, and most of what the provider allows.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
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

# Adaptive limits: AIMD on the request rate (the token rate follows in proportion).
# A throttle cuts the level by BACKOFF: a sawtooth between 85 % and the limit averages well above 90 % of it.
BACKOFF = 0.85
# A throttle that comes before the level has grown SEARCH_WITHIN past the last cut (or at the start, at
# the ceiling) says the level is still above the limit, maybe far above: it is halved, so that a ceiling
# three times too high is left behind in two backoffs instead of seven (each costs a Retry-After pause).
SEARCH_BACKOFF = 0.5
SEARCH_WITHIN = 1.08
# Each answer adds a fixed number of requests/minute. Answers come level/60 a second, so the level grows by
# the same share of itself per second at any size: FAST_STEP_RPM / 60 (5 %/s) back to RECOVER_TO of the
# level the last backoff came from, PROBE_STEP_RPM / 60 (0.1 %/s) beyond it, so that the level stays a few
# percent under the limit for most of the time and meets a 429 about once a minute.
FAST_STEP_RPM = 3.0
PROBE_STEP_RPM = 0.06
RECOVER_TO = 0.95
# However often the server throttles, the level stays above this share of the ceiling. A ceiling more than
# twenty times too high is a configuration error, and 429s that have nothing to do with the rate (a proxy
# shedding load at random) would otherwise hold the role near zero: AIMD cannot tell them apart.
FLOOR_SHARE = 0.05
# The log gets a line on every backoff, and on the way up each time the level has grown by a tenth.
LOG_GROWTH = 1.1

log = logging.getLogger("lion.gateway")


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
    """Paces one batch's requests to one endpoint.

    Fixed (`adaptive=False`): at the configured requests/minute and tokens/minute throughout. Adaptive: at a
    level that starts at that ceiling and settles at what the server really allows, by AIMD: a throttle
    (429, 503/529 overloaded) multiplies the level by BACKOFF (SEARCH_BACKOFF while it is still far too
    high), once for all the requests in flight at the time; each answer adds a few requests/minute; the
    level never goes above the ceiling, nor above an `x-ratelimit-limit-*` the server announces, nor below
    FLOOR_SHARE of the ceiling. The tokens/minute budget follows the level in proportion, so a throttle
    slows requests and tokens alike, whichever of the two limits the server was enforcing, and the level
    means the same for both. `Retry-After` pauses (`pause`) come on top, in either mode.
    """

    def __init__(
        self,
        requests_per_minute: int,
        tokens_per_minute: int,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        *,
        adaptive: bool = False,
        name: str = "",
    ):
        # False by default so that a limiter built without a config paces exactly as the numbers say; the
        # config (`rate_limits.adaptive`) is where the default policy lives.
        self.adaptive, self.name = adaptive, name
        self.ceiling_rpm, self.ceiling_tpm = requests_per_minute, tokens_per_minute
        self._clock, self._sleep = clock, sleep
        self._cap = float(requests_per_minute)  # the ceiling, or lower where the server's headers say so
        self._floor = requests_per_minute * FLOOR_SHARE
        self._peak = float(requests_per_minute)  # the level the last backoff came from
        self._cut_to = float(requests_per_minute)  # and the one it went to
        self._logged = float(requests_per_minute)
        self.backoffs = 0
        self._set_level(float(requests_per_minute))
        self._tokens = self.token_capacity
        self._tokens_at = clock()
        self._next_slot = clock()
        self._paused_until = 0.0
        self._lock = asyncio.Lock()
        self.pauses = 0
        self._in_flight = 0
        self._stale = 0  # requests already in flight when the level was last cut
        self._settled_stale = False

    @property
    def level_rpm(self) -> float:
        """The requests/minute this limiter lets out now."""
        return self._level

    def level_text(self) -> str:
        """The level beside its ceiling, for progress output: '612/1800 rpm'."""
        return f"{self._level:.0f}/{self.ceiling_rpm} rpm"

    def _set_level(self, rpm: float) -> None:
        self._level = rpm
        self.interval = 60.0 / rpm * SPACING_MARGIN
        self.token_rate = self.ceiling_tpm / 60.0 * (rpm / self.ceiling_rpm)
        self.token_capacity = max(self.token_rate, 1.0)  # one second of budget: no minute-long bursts

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
            self._in_flight += 1

    def settle(self, est_tokens: int, actual_tokens: int) -> None:
        """Correct the bucket once `usage` tells what a request really cost (or 0: nothing was sent or
        paid). Every acquired request is settled once, whatever its outcome, before `on_throttle`."""
        self._refill(self._clock())
        self._tokens += est_tokens - actual_tokens
        self._in_flight = max(0, self._in_flight - 1)
        # Replies come back about in the order their requests went out: while some of the requests that
        # were in flight at the last backoff are still out, the one settled now is taken to be one of them.
        self._settled_stale = self._stale > 0
        self._stale = max(0, self._stale - 1)

    def pause(self, seconds: float) -> None:
        until = self._clock() + seconds
        if until > self._paused_until:
            self._paused_until = until
            self.pauses += 1

    def observe(self, headers: Mapping[str, str]) -> None:
        """Pause when the server says a budget is spent (x-ratelimit-remaining-* = 0 until reset); an adaptive
        limiter also keeps under the limits the server announces (x-ratelimit-limit-*)."""
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
        if self.adaptive:
            self._cap_from_headers(headers)

    def _cap_from_headers(self, headers: Mapping[str, str]) -> None:
        cap, announced = float(self.ceiling_rpm), False
        # A tokens/minute limit caps the level at the share of the ceiling that it is of tokens_per_minute,
        # since the token rate follows the level in proportion.
        for kind, per_rpm in (("requests", 1.0), ("tokens", self.ceiling_rpm / self.ceiling_tpm)):
            try:
                limit = float(headers.get(f"x-ratelimit-limit-{kind}", ""))
            except ValueError:
                continue
            if limit > 0:
                cap, announced = min(cap, limit * per_rpm), True
        if announced and cap != self._cap:
            if cap < self._cap:
                log.info("%sthe server announces a limit of %.0f requests/minute (tokens included; configured "
                         "%d): keeping under it", self._who(), cap, self.ceiling_rpm)
            self._cap = cap
            if self._level > cap:
                self._set_level(cap)

    def learnt(self) -> tuple[float, float]:
        """Where this limiter ended: its level, and the level it last backed off from (`start_at`)."""
        return self._level, self._peak

    def start_at(self, rpm: float, peak: float | None = None) -> None:
        """Begin where an earlier batch to the same endpoint ended (within floor and ceiling): at its level,
        growing quickly back towards the level it last backed off from, as it would have. A shard need not
        find the provider's limit again from the ceiling, nor stay below it after one 429."""
        if not self.adaptive:
            return
        level = min(self._cap, max(self._floor, rpm))
        self._peak = max(level, min(self._cap, peak if peak is not None else level))
        self._cut_to = self._logged = level
        self._set_level(level)

    def on_success(self) -> None:
        """A request was answered: an adaptive limiter sends a little faster, quickly back to just below the
        level it last backed off from, slowly beyond it."""
        if not self.adaptive or self._level >= self._cap:
            return
        step = FAST_STEP_RPM if self._level < RECOVER_TO * self._peak else PROBE_STEP_RPM
        self._set_level(min(self._cap, self._level + step))
        if self._level >= min(self._cap, self._logged * LOG_GROWTH):
            self._logged = self._level
            log.info("%srequests/minute back up to %.0f (ceiling %.0f)", self._who(), self._level, self._cap)

    def on_throttle(self) -> None:
        """The server said slow down (429, or 503/529 overloaded): an adaptive limiter backs off, once for all
        the requests that were already in flight when it did."""
        stale, self._settled_stale = self._settled_stale, False
        if not self.adaptive or stale:
            return
        old = self._level
        # Throttled again before the level grew past the last cut (or at the ceiling, before any cut): that
        # level is above the real limit, perhaps far above it, so it is halved. A throttle that comes once the
        # level has grown tells where the limit is, and the cut is the usual one.
        cut = SEARCH_BACKOFF if old < self._cut_to * SEARCH_WITHIN else BACKOFF
        self._peak = old
        self._set_level(max(self._floor, old * cut))
        self._cut_to = self._level
        self._stale = self._in_flight
        self._logged = self._level
        self.backoffs += 1
        log.info("%sthe server says slow down: requests/minute %.0f -> %.0f (ceiling %.0f)", self._who(), old,
                 self._level, self._cap)

    def _who(self) -> str:
        return f"{self.name}: " if self.name else ""
