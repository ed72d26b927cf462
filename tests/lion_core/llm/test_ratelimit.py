import asyncio
import io
import logging

import pytest

from lion_core.llm import ratelimit
from lion_core.llm.progress import Progress
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


# -- adaptive limits -----------------------------------------------------------------------------------

def _adaptive(rpm=600, tpm=60_000):
    clock = FakeClock()
    return RateLimiter(rpm, tpm, clock=clock, sleep=clock.sleep, adaptive=True), clock


def _answered(lim, n=1):
    """n requests go out and are answered, one after another."""
    async def go():
        for _ in range(n):
            await lim.acquire(1)
            lim.settle(1, 1)
            lim.on_success()

    asyncio.run(go())


def _throttled(lim):
    """One request goes out and comes back 429, reported in the gateway's order: settle, then on_throttle."""
    asyncio.run(lim.acquire(1))
    lim.settle(1, 0)
    lim.on_throttle()


def _gaps(lim, clock, n=4):
    times = []

    async def go():
        for _ in range(n):
            await lim.acquire(1)
            times.append(clock.t)
            lim.settle(1, 1)

    asyncio.run(go())
    return [b - a for a, b in zip(times, times[1:])]


def test_fixed_limiter_ignores_throttles_successes_and_limit_headers():
    lim, clock = _limiter(rpm=600, tpm=60_000)
    assert not lim.adaptive  # what existing callers get
    _throttled(lim)
    lim.observe({"x-ratelimit-limit-requests": "60", "x-ratelimit-limit-tokens": "600"})
    _answered(lim, 50)
    assert lim.level_rpm == 600 and lim.backoffs == 0
    assert lim.interval == pytest.approx(0.1 * SPACING_MARGIN) and lim.token_rate == pytest.approx(1000)
    assert _gaps(lim, clock) == pytest.approx([0.1 * SPACING_MARGIN] * 3)


def test_a_throttle_slows_requests_and_tokens_alike():
    lim, clock = _adaptive(rpm=600, tpm=60_000)
    _throttled(lim)  # at the ceiling: still far too high, so the level is halved
    assert lim.level_rpm == pytest.approx(600 * ratelimit.SEARCH_BACKOFF) and lim.backoffs == 1
    assert lim.token_rate == pytest.approx(1000 * ratelimit.SEARCH_BACKOFF)
    assert _gaps(lim, clock) == pytest.approx([60 / lim.level_rpm * SPACING_MARGIN] * 3)
    _answered(lim, 100)  # grown well past the cut: the next throttle is an ordinary backoff
    grown = lim.level_rpm
    assert grown > 300 * ratelimit.SEARCH_WITHIN
    _throttled(lim)
    assert lim.level_rpm == pytest.approx(grown * ratelimit.BACKOFF) and lim.backoffs == 2


def test_a_burst_of_429s_from_requests_already_in_flight_is_one_backoff():
    lim, _ = _adaptive(rpm=600)

    async def send(n):
        for _ in range(n):
            await lim.acquire(1)

    asyncio.run(send(8))  # eight requests in flight
    for _ in range(8):  # ... and all of them come back 429
        lim.settle(1, 0)
        lim.on_throttle()
    assert lim.backoffs == 1 and lim.level_rpm == pytest.approx(600 * ratelimit.SEARCH_BACKOFF)
    _throttled(lim)  # a request sent at the new level is throttled too: that is news
    assert lim.backoffs == 2 and lim.level_rpm == pytest.approx(600 * ratelimit.SEARCH_BACKOFF ** 2)


def test_answers_win_the_level_back_step_by_step_up_to_the_ceiling_and_not_past_it():
    lim, _ = _adaptive(rpm=600)
    _throttled(lim)
    levels = []
    for _ in range(400):
        _answered(lim)
        levels.append(lim.level_rpm)
    steps = [b - a for a, b in zip([300.0] + levels, levels)]
    fast = [s for lv, s in zip(levels, steps) if lv < ratelimit.RECOVER_TO * 600]
    assert fast and all(s == pytest.approx(ratelimit.FAST_STEP_RPM) for s in fast[:-1])  # additive, quick
    probe = [s for lv, s in zip(levels, steps) if ratelimit.RECOVER_TO * 600 + 1 < lv < 600]
    assert probe and all(s == pytest.approx(ratelimit.PROBE_STEP_RPM) for s in probe)  # then slow near the limit
    lim2, _ = _adaptive(rpm=600)
    _throttled(lim2)
    _answered(lim2, 10_000)
    assert lim2.level_rpm == 600  # at the ceiling, and no further
    _answered(lim2, 100)
    assert lim2.level_rpm == 600 and lim2.interval == pytest.approx(0.1 * SPACING_MARGIN)


def test_the_level_never_falls_below_the_floor():
    lim, _ = _adaptive(rpm=600)
    for _ in range(50):
        _throttled(lim)
    assert lim.level_rpm == pytest.approx(600 * ratelimit.FLOOR_SHARE)


def test_a_limit_the_server_announces_below_the_ceiling_is_kept():
    lim, clock = _adaptive(rpm=600, tpm=60_000)
    lim.observe({"x-ratelimit-limit-requests": "240", "x-ratelimit-remaining-requests": "200"})
    assert lim.level_rpm == 240
    _answered(lim, 500)
    assert lim.level_rpm == 240  # answers do not take it past the server's limit
    assert _gaps(lim, clock) == pytest.approx([60 / 240 * SPACING_MARGIN] * 3)
    lim.observe({"x-ratelimit-limit-requests": "5000", "x-ratelimit-limit-tokens": "30000"})
    assert lim.level_rpm == 240
    _answered(lim, 10_000)
    assert lim.level_rpm == 300  # tokens: 30,000 of the configured 60,000 a minute hold it at half the ceiling
    lim.observe({"x-ratelimit-limit-requests": "5000"})  # above the ceiling: the ceiling still holds
    _answered(lim, 10_000)
    assert lim.level_rpm == 600


def test_backoffs_are_logged_with_the_new_level_and_the_ceiling_but_not_every_answer(caplog):
    caplog.set_level(logging.INFO, logger="lion.gateway")
    clock = FakeClock()
    lim = RateLimiter(600, 60_000, clock=clock, sleep=clock.sleep, adaptive=True, name="teacher/imitation")
    _throttled(lim)
    assert "teacher/imitation: the server says slow down: requests/minute 600 -> 300 (ceiling 600)" in caplog.text
    _answered(lim, 2000)
    assert lim.level_rpm == 600
    ups = [r for r in caplog.records if "back up" in r.getMessage()]
    assert 1 <= len(ups) <= 10 and "back up to 600" in ups[-1].getMessage()


def test_the_level_shows_in_progress_lines_and_on_the_bar(caplog):
    lim, _ = _adaptive(rpm=600)
    _throttled(lim)
    p = Progress(10, "teacher/imitation", stream=io.StringIO(), interval_s=0)
    assert "level" not in p.line()
    p.level = lim.level_text
    assert "req/s, level 300/600 rpm, ETA" in p.line()
    _answered(lim, 5)
    assert "level 315/600 rpm" in p.line()

    class Tty(io.StringIO):
        def isatty(self):
            return True

    out = Tty()
    bar = Progress(4, "teacher/imitation", stream=out)
    bar.level = lim.level_text
    bar.update(True)
    bar.close()
    assert "level=315/600 rpm" in out.getvalue()


def test_a_later_batch_to_the_same_endpoint_starts_at_the_level_the_last_one_settled_at(tmp_path):
    from lion_core.config import ApiRole, RateLimits, RetryPolicy
    from lion_core.llm import ChatRequest, Endpoint, Gateway, ResponseStore
    from lion_core.llm.gateway import LEARNT_RPM
    from tests.fault_server import FaultPlan, FaultServer

    with FaultServer(FaultPlan(requests_per_minute=1200, retry_after_s=0.05)) as srv, \
            ResponseStore(str(tmp_path / "r.sqlite")) as store:
        cfg = ApiRole(base_url=srv.url, model="m", retry=RetryPolicy(initial_backoff_s=0.02, max_backoff_s=0.5),
                      rate_limits=RateLimits(requests_per_minute=6000, max_concurrency=8))
        ep = Endpoint(role="teacher", endpoint_id="ep", model="m", base_url=srv.url, api_model="m", config=cfg)
        throttled = []
        for batch in range(2):
            before = srv.stats.outcomes["429-rate"]
            reqs = [ChatRequest.of([("user", f"batch {batch} question {i}")], max_tokens=8) for i in range(120)]
            assert all(r.ok for r in Gateway(ep, store).run_sync(reqs, "s"))
            throttled.append(srv.stats.outcomes["429-rate"] - before)
            if batch == 0:
                learnt, _ = LEARNT_RPM[(srv.url, "m", 6000)]
                assert learnt < 6000 / 2  # it found the server's limit well below the configured one
    assert throttled[0] > 0 and throttled[1] < throttled[0]  # the second batch did not search from the ceiling


def test_start_at_stays_within_floor_and_ceiling():
    limiter = RateLimiter(600, 60_000, adaptive=True)
    limiter.start_at(100)
    assert limiter.level_rpm == 100
    limiter.start_at(10_000)
    assert limiter.level_rpm == 600
    limiter.start_at(0.001)
    assert limiter.level_rpm == 600 * 0.05
    fixed = RateLimiter(600, 60_000)
    fixed.start_at(100)
    assert fixed.level_rpm == 600


def test_a_batch_started_below_an_earlier_peak_grows_back_quickly():
    quick = RateLimiter(3600, 10**9, adaptive=True)
    quick.start_at(1000, 3000)  # an earlier batch backed off from 3000 to 1000
    slow = RateLimiter(3600, 10**9, adaptive=True)
    slow.start_at(1000)  # as if it had backed off at 1000 itself
    for _ in range(100):
        quick.on_success()
        slow.on_success()
    assert quick.level_rpm == pytest.approx(1000 + 100 * ratelimit.FAST_STEP_RPM)
    assert slow.level_rpm == pytest.approx(1000 + 100 * ratelimit.PROBE_STEP_RPM)
    assert quick.learnt() == (quick.level_rpm, 3000)
