"""An endpoint that is down or overloaded for a while: the gateway waits and probes, and no request is
recorded as failed for it (real HTTP on loopback; the server's outage is scripted)."""

import asyncio
import time

import openai
import pytest

from lion_core.config import ApiRole, RateLimits, RetryPolicy
from lion_core.errors import EndpointDown
from lion_core.llm import ChatRequest, Endpoint, Gateway, ResponseStore
from lion_core.llm.health import BatchView, Outage
from tests.fault_server import FaultPlan, FaultServer

# max_attempts 3: without outage handling, 30 s of 503s would spend every request's attempts many times over
RETRY = RetryPolicy(max_attempts=3, initial_backoff_s=0.05, max_backoff_s=2.0, request_timeout_s=5.0, outage_after=5)


def _endpoint(url, retry=RETRY):
    cfg = ApiRole(base_url=url, model="m", retry=retry, rate_limits=RateLimits(requests_per_minute=60000, max_concurrency=8))
    return Endpoint(role="teacher", endpoint_id="ep", model="m", base_url=url, api_model="m", config=cfg)


def _requests(n):
    return [ChatRequest.of([("user", f"question {i}")], max_tokens=8) for i in range(n)]


@pytest.fixture
def store(tmp_path):
    with ResponseStore(str(tmp_path / "responses.sqlite")) as s:
        yield s


def test_thirty_seconds_of_503_overloaded_mid_stage_fails_no_request_and_pays_none_twice(store):
    plan = FaultPlan(fail_after=40, outage_s=30, fail_status=503, latency_s=0.01)
    with FaultServer(plan) as srv:
        started = time.monotonic()
        gateway = Gateway(_endpoint(srv.url), store)
        results = gateway.run_sync(_requests(120), "imitation")
        elapsed = time.monotonic() - started
    assert srv.stats.outcomes["outage"] > 5  # the outage happened mid-stage, and was ridden out
    assert all(r.ok for r in results)
    assert store.counts() == {"ok": 120}  # not one request recorded as failed
    assert max(srv.stats.answered.values()) == 1 and sum(srv.stats.answered.values()) == 120
    assert elapsed >= 30
    # probing, not hammering: one request at a time with a growing wait, not every worker's attempts
    assert srv.stats.outcomes["outage"] < 60


def test_an_outage_longer_than_allowed_stops_the_batch_without_recording_failures(store):
    retry = RETRY.model_copy(update={"max_outage_s": 1.0})
    with FaultServer(FaultPlan(fail_after=10, fail_status=503)) as srv:
        with pytest.raises(EndpointDown, match=r"retry.max_outage_s \(1 s\).*resume"):
            Gateway(_endpoint(srv.url, retry), store).run_sync(_requests(40), "imitation")
        assert store.counts() == {"ok": 10}
        srv.plan = FaultPlan()  # back: a resume sends only what is missing
        results = Gateway(_endpoint(srv.url), store).run_sync(_requests(40), "imitation")
    assert all(r.ok for r in results)
    assert max(srv.stats.answered.values()) == 1 and sum(srv.stats.answered.values()) == 40


def test_occasional_server_errors_are_not_an_outage(store):
    # a 500 every few requests never makes five in a row: each request's own attempts handle them
    with FaultServer(FaultPlan(rate_500=0.2, seed=4)) as srv:
        gateway = Gateway(_endpoint(srv.url), store)
        results = gateway.run_sync(_requests(60), "imitation")
    assert srv.stats.outcomes["500"] > 0
    assert sum(r.ok for r in results) >= 58


def _server_error():
    import httpx2

    request = httpx2.Request("POST", "http://x/v1/chat/completions")
    return openai.InternalServerError("boom", response=httpx2.Response(503, request=request), body=None)


def test_outage_opens_after_a_run_of_server_errors_and_the_first_answer_closes_it():
    async def scenario():
        now = [0.0]
        slept = []

        async def sleep(s):
            slept.append(s)
            now[0] += s

        outage = Outage("teacher/s", after=3, max_s=100, first_wait_s=1, longest_wait_s=4, clock=lambda: now[0],
                        sleep=sleep)
        for _ in range(2):
            outage.record(_server_error())
        outage.record(None)  # an answer between errors: the run starts again
        for _ in range(2):
            outage.record(_server_error())
        batch = BatchView(lambda: False)
        assert not outage.down and await outage.admit(batch) is False
        outage.record(_server_error())
        assert outage.down
        waits = []
        for _ in range(4):  # each probe fails: the wait doubles up to the longest
            assert await outage.admit(batch) is True
            waits.append(slept[-1])
            outage.record(_server_error())
            outage.probe_done()
        assert waits == [1, 2, 4, 4]
        assert await outage.admit(batch) is True
        outage.record(None)
        outage.probe_done()
        assert not outage.down and await outage.admit(batch) is False

    asyncio.run(scenario())


def test_outage_past_its_limit_raises():
    async def scenario():
        now = [0.0]

        async def sleep(s):
            now[0] += s

        outage = Outage("referee/s", after=1, max_s=10, first_wait_s=4, longest_wait_s=4, clock=lambda: now[0],
                        sleep=sleep)
        outage.record(_server_error())
        first = BatchView(lambda: False)
        with pytest.raises(EndpointDown, match="referee/s"):
            for _ in range(10):
                await outage.admit(first)
                outage.record(_server_error())
                outage.probe_done()
        # a batch that starts after the limit (the next shard) probes once, at once, then stops too
        late, before = BatchView(lambda: False), now[0]
        assert await outage.admit(late) is True and now[0] == before
        outage.record(_server_error())
        outage.probe_done()
        with pytest.raises(EndpointDown):
            await outage.admit(late)
        # and a late batch whose probe is answered finds the endpoint up again, with the batches that
        # started beside it waiting for that probe rather than stopping
        again, beside = BatchView(lambda: False), BatchView(lambda: False)
        assert await outage.admit(again) is True
        waiting = asyncio.ensure_future(outage.admit(beside))
        await asyncio.sleep(0)
        assert not waiting.done()
        outage.record(None)
        outage.probe_done()
        assert await outage.admit(again) is False
        assert await waiting is False

    asyncio.run(scenario())


def test_a_batch_that_stops_leaves_the_outage_queue():
    async def scenario():
        outage = Outage("teacher/s", after=1, max_s=100, first_wait_s=5, longest_wait_s=5)
        outage.record(_server_error())
        stop = []
        batch = BatchView(lambda: bool(stop))
        prober = asyncio.ensure_future(outage.admit(batch))  # sleeps 5 s before its probe
        await asyncio.sleep(0)
        waiter = asyncio.ensure_future(outage.admit(batch))
        stop.append(True)  # the budget was refused, say
        assert await asyncio.wait_for(waiter, 2) is None  # within PATIENCE_S, not after the outage
        prober.cancel()

    asyncio.run(scenario())
