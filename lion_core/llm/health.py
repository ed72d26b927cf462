"""Whether an endpoint is up, as a batch's replies tell it: refused connections (the breaker: the batch
stops, the task is retried later) and runs of server errors (an outage: the batch waits and probes).

An hour of 503 "overloaded" from a provider is not a property of the requests sent during it: counted
against each request's attempts it would record every one of them as failed and stop the run at
`max_failed_fraction`. So once `outage_after` server errors come in a row, the batch sends one request
at a time, with a growing wait, and does not count the attempts spent meanwhile; the first answer ends
the outage and every worker goes on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import openai

from lion_core.errors import EndpointDown

log = logging.getLogger("lion.gateway")


class Breaker:
    """Counts connection failures in a row across a batch's workers; any answer from the server,
    even an error status, shows it is reachable and resets the count."""

    def __init__(self, threshold: int):
        self.threshold, self.streak, self.last = threshold, 0, ""

    @property
    def open(self) -> bool:
        return self.streak >= self.threshold

    def record(self, err: BaseException | None, message: str = "") -> None:
        if err is None or not isinstance(err, openai.APIConnectionError):
            self.streak = 0
        elif not isinstance(err, openai.APITimeoutError):  # slow is not down
            self.streak += 1
            self.last = f"{type(err).__name__}: {message}"


def server_error(err: BaseException) -> bool:
    """A reply that says the server side is in trouble, whichever request it answers: a 5xx (503 and 529
    overloaded included) or a timeout."""
    if isinstance(err, openai.APITimeoutError):
        return True
    return isinstance(err, openai.APIStatusError) and err.status_code >= 500


class BatchView:
    """What the outage needs to know of one batch: whether it stopped, and whether it has probed since the
    outage ran past its limit."""

    def __init__(self, stopped: Callable[[], bool]):
        self.stopped = stopped
        self.probed_past_limit = False


class Outage:
    """An endpoint as the batches of a process see it: up, or down since a moment, with one probe at a time."""

    PATIENCE_S = 1.0
    """How often a worker waiting for the end of an outage looks whether its batch stopped or the outage
    ran past its limit."""

    def __init__(self, label: str, after: int, max_s: float, first_wait_s: float, longest_wait_s: float,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep):
        self.label, self.after, self.max_s = label, after, max_s
        self.first_wait_s, self.longest_wait_s = first_wait_s, longest_wait_s
        self._clock, self._sleep = clock, sleep
        self.streak = 0
        self.since: float | None = None
        self.probes = 0
        self.outages = 0
        self.last_error = ""
        self._probing = False
        self._up = asyncio.Event()
        self._up.set()

    @property
    def down(self) -> bool:
        return self.since is not None

    def record(self, err: BaseException | None, message: str = "") -> None:
        """What one reply said: an answer (any non-server error counts as one) or a server error."""
        if err is None or not server_error(err):
            self.streak = 0
            if self.since is not None:
                log.warning("%s: the endpoint answers again after %.0f s down (%d probes); going on",
                            self.label, self._clock() - self.since, self.probes)
                self.since, self.probes = None, 0
                self._up.set()
            return
        self.streak += 1
        self.last_error = f"{type(err).__name__}: {message}"
        if self.since is None and self.streak >= self.after:
            self.since = self._clock()
            self.outages += 1
            self._up.clear()
            log.warning("%s: %d server errors in a row (last %s): the endpoint counts as down; probing with one "
                        "request at a time for up to %.0f s", self.label, self.streak, self.last_error, self.max_s)

    async def admit(self, batch: BatchView) -> bool | None:
        """Wait until a request of `batch` may go. When the endpoint is up: at once (False). When it is down:
        as the one probe, after a wait that doubles with every probe (True; call `probe_done` after it). None:
        the batch stopped meanwhile (`batch.stopped()`), the request is not sent. Past `max_s` each batch
        gets one probe at once (the outage is shared by the batches of a process, so a batch that starts
        late need not wait the whole time again), then EndpointDown."""
        while self.since is not None:
            if batch.stopped():
                return None
            if self._clock() - self.since > self.max_s:
                if batch.probed_past_limit:
                    raise EndpointDown(
                        f"{self.label}: the endpoint has answered only server errors for "
                        f"{self._clock() - self.since:.0f} s (last {self.last_error}), longer than retry.max_outage_s "
                        f"({self.max_s:.0f} s); the run stopped sending. Nothing was recorded as failed: resume it "
                        f"when the provider is back")
                if not self._probing:
                    batch.probed_past_limit = self._probing = True
                    return True
            elif not self._probing:
                self._probing = True
                try:
                    await self._sleep(min(self.longest_wait_s, self.first_wait_s * 2 ** min(self.probes, 30)))
                except BaseException:
                    self._probing = False
                    raise
                if self.since is None:  # another reply ended it meanwhile
                    self._probing = False
                    return False
                self.probes += 1
                return True
            try:
                await asyncio.wait_for(self._up.wait(), self.PATIENCE_S)
            except asyncio.TimeoutError:
                pass
        return False

    def probe_done(self) -> None:
        self._probing = False
