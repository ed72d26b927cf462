import asyncio

import pytest

from lion_core.llm.ratelimit import SPACING_MARGIN, RateLimiter, parse_duration, retry_after_seconds


@pytest.mark.parametrize("text,secs", [("1", 1.0), ("0.5", 0.5), ("20ms", 0.02), ("6m0s", 360.0),
                                       ("1h2m3.5s", 3723.5), ("1s", 1.0), ("soon", None), ("", None), (None, None)])
def test_parse_duration(text, secs):
    assert parse_duration(text) == (pytest.approx(secs) if secs is not None else None)


def test_retry_after_forms():
    assert retry_after_seconds({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert retry_after_seconds({"retry-after": "3"}) == 3.0
    assert retry_after_seconds({"retry-after": "Fri, 27 Nov 2026 12:00:10 GMT"}, now_epoch=1795780800.0) == pytest.approx(10.0)
    assert retry_after_seconds({}) is None


class FakeClock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t

    async def sleep(self, s):
        self.t += s


def _limiter(rpm=600, tpm=10**9):
    clock = FakeClock()
    return RateLimiter(rpm, tpm, clock=clock, sleep=clock.sleep), clock


def test_requests_are_spaced_evenly_not_burst():
    lim, clock = _limiter(rpm=600)
    times = []

    async def go():
        for _ in range(5):
            await lim.acquire(1)
            times.append(clock.t)

    asyncio.run(go())
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert gaps == pytest.approx([0.1 * SPACING_MARGIN] * 4)


def test_token_budget_waits_and_is_settled_from_usage():
    lim, clock = _limiter(rpm=10**6, tpm=6000)  # 100 tokens/s, bucket of 100
    async def go():
        await lim.acquire(100)          # empties the bucket
        t0 = clock.t
        await lim.acquire(50)           # needs 0.5 s of refill
        return clock.t - t0
    assert asyncio.run(go()) == pytest.approx(0.5, abs=0.01)
    lim.settle(est_tokens=50, actual_tokens=10)  # over-estimated: 40 tokens come back
    async def go2():
        t0 = clock.t
        await lim.acquire(40)
        return clock.t - t0
    assert asyncio.run(go2()) == pytest.approx(0.0, abs=0.01)


def test_server_headers_pause_everyone():
    lim, clock = _limiter(rpm=6000)
    lim.observe({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "2s"})
    lim.observe({"x-ratelimit-remaining-tokens": "5000", "x-ratelimit-reset-tokens": "30s"})  # not spent: no pause
    t0 = clock.t
    asyncio.run(lim.acquire(1))
    assert clock.t - t0 == pytest.approx(2.0)
    assert lim.pauses == 1


def test_pause_only_extends():
    lim, clock = _limiter()
    lim.pause(5)
    lim.pause(1)
    t0 = clock.t
    asyncio.run(lim.acquire(1))
    assert clock.t - t0 == pytest.approx(5.0)
