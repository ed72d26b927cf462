"""The gateway against a real HTTP server on loopback that injects faults."""

import contextlib
import io
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lion_core.config import ApiRole, Price, RateLimits, RetryPolicy
from lion_core.errors import ConfigError
from lion_core.llm import ChatRequest, Endpoint, Gateway, ResponseStore
from lion_core.llm.gateway import EndpointRejected
from lion_core.llm.progress import Progress
from tests.fault_server import FaultPlan, FaultServer
from tests.helpers import FaultServerProcess

# outage_after: these tests count each request's own attempts; tests of outages set it themselves
FAST_RETRY = RetryPolicy(max_attempts=6, initial_backoff_s=0.02, max_backoff_s=0.2, request_timeout_s=1.0,
                         outage_after=1000)


def _endpoint(url, *, retry=FAST_RETRY, concurrency=8, api_key="no-key", **kw):
    cfg = ApiRole(base_url=url, model="m", retry=retry,
                  rate_limits=RateLimits(requests_per_minute=60000, max_concurrency=concurrency), **kw)
    # a fixed endpoint id: answers stay keyed the same when the test server moves to another port
    return Endpoint(role="teacher", endpoint_id="test-endpoint", model="m", base_url=url, api_model="m",
                    config=cfg, api_key=api_key)


def _requests(n, prefix="q"):
    return [ChatRequest.of([("user", f"{prefix} {i}")], max_tokens=8, tag=f"t{i}") for i in range(n)]


@pytest.fixture
def store(tmp_path):
    with ResponseStore(str(tmp_path / "responses.sqlite")) as s:
        yield s


def _rows(store):
    """What the store's file holds, read through a connection of our own."""
    with contextlib.closing(sqlite3.connect(store.path)) as db:
        return {r[0]: r[1:] for r in db.execute("SELECT key, status, text, error_class, attempts FROM responses")}


def test_every_request_ends_as_one_success_or_one_failure_and_nothing_is_paid_twice(store):
    plan = FaultPlan(rate_429=0.1, rate_500=0.1, rate_slow=0.04, rate_drop=0.1, rate_malformed=0.1,
                     retry_after_s=0.05, slow_s=3.0, seed=7)
    reqs = _requests(120)
    with FaultServer(plan) as srv:
        gw = Gateway(_endpoint(srv.url), store)
        results = gw.run_sync(reqs, "imitation")
    assert [r.tag for r in results] == [f"t{i}" for i in range(120)]  # input order
    rows = _rows(store)
    assert len(rows) == 120 and {r.key for r in results} == set(rows)
    for r in results:
        status, text, error_class, attempts = rows[r.key]
        if r.ok:
            assert status == "ok" and text == r.text == f"Answer to: {r.tag.replace('t', 'q ')}"
        else:
            assert status == "failed" and text is None and error_class
        assert attempts == r.attempts >= 1
    assert max(srv.stats.successes.values()) == 1  # no answered request was sent again
    assert sum(srv.stats.successes.values()) == sum(r.ok for r in results)
    for fault in ("429", "500", "slow", "drop", "malformed"):
        assert srv.stats.outcomes[fault] > 0, fault  # every fault kind really happened
    usage = gw.accounting.table()[0]
    assert usage.calls == sum(srv.stats.outcomes.values())
    assert usage.retries == usage.calls - usage.requests


def test_a_rerun_sends_only_what_has_no_stored_success(store):
    reqs = _requests(20)
    with FaultServer(FaultPlan(rate_500=1.0)) as broken:  # every call fails
        two_tries = _endpoint(broken.url, retry=FAST_RETRY.model_copy(update={"max_attempts": 2}))
        first = Gateway(two_tries, store).run_sync(reqs[:10], "s")
    assert not any(r.ok for r in first)
    assert all(r.error_class == "InternalServerError" and r.attempts == 2 for r in first)
    assert {v[0] for v in _rows(store).values()} == {"failed"}
    with FaultServer() as ok_server:
        gw = Gateway(_endpoint(ok_server.url), store)
        second = gw.run_sync(reqs[:15], "s")
        assert all(r.ok for r in second)
        assert all(r.attempts == 3 for r in second[:10])  # 2 earlier failed attempts + this one
        third = gw.run_sync(reqs, "s")
    assert sum(ok_server.stats.successes.values()) == 20  # 15, then only the 5 new ones
    assert max(ok_server.stats.successes.values()) == 1
    assert [r.cached for r in third] == [True] * 15 + [False] * 5
    assert gw.accounting.row("teacher", "s").cached == 15


def test_identical_requests_in_a_batch_are_sent_once(store):
    reqs = _requests(3) + _requests(3)
    with FaultServer() as srv:
        results = Gateway(_endpoint(srv.url), store).run_sync(reqs, "s")
    assert srv.stats.outcomes["ok"] == 3
    assert [r.text for r in results[:3]] == [r.text for r in results[3:]]


def test_retry_after_is_honoured(store):
    with FaultServer(FaultPlan(script=("429",), retry_after_s=0.6)) as srv:
        [r] = Gateway(_endpoint(srv.url), store).run_sync(_requests(1), "s")
    first, second = srv.stats.arrivals["q 0"]
    assert r.ok and r.attempts == 2
    assert second - first >= 0.6


@pytest.mark.parametrize("fault", ["500", "drop", "slow", "malformed"])
def test_transient_faults_are_retried(store, fault):
    with FaultServer(FaultPlan(script=(fault, fault), slow_s=3.0)) as srv:
        impatient = _endpoint(srv.url, retry=FAST_RETRY.model_copy(update={"request_timeout_s": 0.5}))
        [r] = Gateway(impatient, store).run_sync(_requests(1), "s")
    assert r.ok and r.attempts == 3
    assert srv.stats.outcomes[fault] == 2


def test_retries_are_bounded_and_the_failure_keeps_its_reason(store):
    with FaultServer(FaultPlan(rate_drop=1.0)) as srv:
        three_tries = _endpoint(srv.url, retry=FAST_RETRY.model_copy(update={"max_attempts": 3}))
        [r] = Gateway(three_tries, store).run_sync(_requests(1), "s")
    assert not r.ok and r.attempts == 3 and r.error_class == "APIConnectionError"
    assert srv.stats.outcomes["drop"] == 3
    row = store.row(r.key)
    assert (row["status"], row["text"], row["error_class"]) == ("failed", None, "APIConnectionError")
    assert row["error_message"]


def test_authentication_errors_stop_the_batch_and_never_leak_the_key(tmp_path):
    secret = "sk-test-" + "Q7w9E2r4T6y8" * 3
    with ResponseStore(str(tmp_path / "r.sqlite")) as store, FaultServer(FaultPlan(api_key="sk-the-right-one")) as srv:
        gw = Gateway(_endpoint(srv.url, api_key=secret, concurrency=4), store)
        with pytest.raises(EndpointRejected) as exc:
            gw.run_sync(_requests(50), "s")
    assert srv.stats.outcomes["401"] == 1  # the first request goes alone: one rejected call, no retry
    assert "0 of 50 requests answered or recorded" in str(exc.value)
    assert secret not in str(exc.value) and "Q7w9E2r4T6y8" not in str(exc.value)
    for f in tmp_path.iterdir():
        assert b"Q7w9E2r4T6y8" not in f.read_bytes()


def test_the_right_key_is_sent_and_never_stored(tmp_path):
    secret = "sk-test-" + "Z1x2C3v4B5n6" * 3
    with ResponseStore(str(tmp_path / "r.sqlite")) as store, FaultServer(FaultPlan(api_key=secret)) as srv:
        results = Gateway(_endpoint(srv.url, api_key=secret), store).run_sync(_requests(5), "s")
        with contextlib.closing(sqlite3.connect(store.path)) as db:
            db.execute("PRAGMA wal_checkpoint(FULL)")
    assert all(r.ok for r in results)
    for f in tmp_path.iterdir():
        assert b"Z1x2C3v4B5n6" not in f.read_bytes(), f


def test_endpoint_key_comes_from_the_named_variable(monkeypatch):
    cfg = ApiRole(base_url="http://127.0.0.1:1/v1", model="m", api_key_env="LION_TEST_KEY")
    monkeypatch.delenv("LION_TEST_KEY", raising=False)
    with pytest.raises(ConfigError, match="teacher.api_key_env: environment variable LION_TEST_KEY is not set"):
        Endpoint.from_config("teacher", cfg)
    monkeypatch.setenv("LION_TEST_KEY", "sk-abcdef")
    ep = Endpoint.from_config("teacher", cfg)
    assert ep.api_key == "sk-abcdef" and "sk-abcdef" not in repr(ep)
    assert ep.endpoint_id == "http://127.0.0.1:1/v1"


def test_context_overflow_is_truncated_once(store):
    long = ChatRequest.of([("user", "word " * 100)], max_tokens=8)
    with FaultServer(FaultPlan(max_prompt_chars=300)) as srv:
        [r] = Gateway(_endpoint(srv.url), store).run_sync([long], "s")
    assert r.ok and r.truncated and r.attempts == 2
    assert srv.stats.outcomes["context"] == 1
    assert store.row(r.key)["truncated"] == 1


def test_context_overflow_fails_when_configured_and_is_not_retried(store):
    long = ChatRequest.of([("user", "word " * 100)], max_tokens=8)
    with FaultServer(FaultPlan(max_prompt_chars=300)) as srv:
        [r] = Gateway(_endpoint(srv.url, context_overflow="fail"), store).run_sync([long], "s")
    assert not r.ok and r.attempts == 1 and r.error_class == "BadRequestError"
    assert srv.stats.outcomes["context"] == 1


def test_still_too_long_after_truncation_fails(store):
    long = ChatRequest.of([("user", "word " * 400)], max_tokens=8)
    with FaultServer(FaultPlan(max_prompt_chars=300)) as srv:
        [r] = Gateway(_endpoint(srv.url), store).run_sync([long], "s")
    assert not r.ok and r.truncated and r.attempts == 2


def test_requests_are_let_out_within_the_servers_window(store, monkeypatch):
    """The client never lets more requests go in any window than the server's limit allows.

    Checked on the client's own grant times, which it controls; whether the server then counts a 429
    also depends on how both processes are scheduled, so the zero-429 figure is measured by
    bench/fanout.py on an idle machine instead."""
    from lion_core.llm import ratelimit

    grants = []
    real_acquire = ratelimit.RateLimiter.acquire

    async def recording_acquire(self, est_tokens):
        await real_acquire(self, est_tokens)
        grants.append(time.monotonic())

    monkeypatch.setattr(ratelimit.RateLimiter, "acquire", recording_acquire)
    with FaultServerProcess("--requests-per-minute", "1200") as srv:  # 20 per second, checked per second
        ep = _endpoint(srv.url)
        ep = Endpoint(**{**ep.__dict__, "config": ep.config.model_copy(
            update={"rate_limits": RateLimits(requests_per_minute=1200, max_concurrency=8)})})
        results = Gateway(ep, store).run_sync(_requests(45), "s")
    assert all(r.ok for r in results) and srv.stats["answered"] == 45
    assert len(grants) >= 45
    assert min(b - a for a, b in zip(grants, grants[20:])) >= 1.0  # 21 grants never fit in one second
    assert grants[-1] - grants[0] >= 44 * 60 / 1200  # paced, not burst


def test_cost_comes_from_the_price_table(store):
    with FaultServer() as srv:
        gw = Gateway(_endpoint(srv.url, price=Price(prompt_per_million=1000.0, completion_per_million=2000.0)), store)
        results = gw.run_sync(_requests(4), "imitation")
    row = gw.accounting.row("teacher", "imitation")
    pt, ct = sum(r.prompt_tokens for r in results), sum(r.completion_tokens for r in results)
    assert (row.prompt_tokens, row.completion_tokens) == (pt, ct) and pt > 0
    assert row.cost_usd == pytest.approx((pt * 1000 + ct * 2000) / 1e6)
    assert "| teacher | imitation | interactive | 4 | 0 | 4 | 0 | 0 |" in gw.accounting.markdown()


def test_progress_logs_lines_when_not_a_terminal(caplog):
    caplog.set_level(logging.INFO, logger="lion.gateway")
    p = Progress(3, "teacher/imitation", stream=io.StringIO(), interval_s=0)
    p.update(True, cached=True)
    p.update(False)
    p.close()
    assert "teacher/imitation: 2/3 done (1 failed, 1 from store)" in caplog.text and "ETA" in caplog.text


def test_progress_draws_a_bar_on_a_terminal():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    out = Tty()
    p = Progress(4, "referee/discrimination", stream=out)
    for _ in range(4):
        p.update(True)
    p.close()
    assert "referee/discrimination" in out.getvalue() and "4/4" in out.getvalue()


def test_killed_mid_batch_resumes_without_resending_completed_requests(tmp_path):
    store_path = tmp_path / "responses.sqlite"
    client = [sys.executable, str(Path(__file__).with_name("_batch_client.py"))]
    with FaultServer(FaultPlan(latency_s=0.15)) as srv:
        proc = subprocess.Popen([*client, srv.url, str(store_path), "60"], stdout=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        done = 0
        while time.monotonic() < deadline and done < 15:
            time.sleep(0.05)
            if store_path.exists():
                with sqlite3.connect(store_path) as db:
                    try:
                        done = db.execute("SELECT COUNT(*) FROM responses WHERE status='ok'").fetchone()[0]
                    except sqlite3.OperationalError:
                        done = 0
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        with sqlite3.connect(store_path) as db:
            stored_before = {r[0] for r in db.execute("SELECT request FROM responses WHERE status='ok'")}
        answered_before = sum(srv.stats.successes.values())
        assert 15 <= len(stored_before) < 60
        # lost: answered by the server but not yet persisted, at most the requests in flight
        assert answered_before - len(stored_before) <= 4
        out = subprocess.run([*client, srv.url, str(store_path), "60"], capture_output=True, text=True, timeout=120)
        assert out.stdout.strip() == "60", out.stderr
    resent = {m for m, n in srv.stats.successes.items() if n > 1}
    assert len(resent) <= 4
    for request_json in stored_before:  # nothing persisted before the kill was asked again
        assert srv.stats.successes[next(m for m in srv.stats.successes if f'"{m}"' in request_json)] == 1
    with sqlite3.connect(store_path) as db:
        assert db.execute("SELECT COUNT(*) FROM responses WHERE status='ok'").fetchone()[0] == 60


def test_scrub_removes_keys_but_not_ordinary_words():
    from lion_core.llm.gateway import scrub

    msg = "Incorrect API key provided: sk-proj-abc***wxyz. See the task-list for sk_live_12345678."
    out = scrub(msg, api_key="sk-proj-abcdefghwxyz")
    assert "abc***wxyz" not in out and "12345678" not in out
    assert "task-list" in out
    assert scrub("key sk-proj-abcdefghwxyz here", api_key="sk-proj-abcdefghwxyz") == "key *** here"


def test_an_endpoint_that_is_down_stops_the_batch_early_and_the_rerun_sends_the_rest(store):
    from lion_core.llm.embedded import free_port
    from lion_core.llm.gateway import EndpointUnreachable

    down = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there: every connection is refused
    retry = FAST_RETRY.model_copy(update={"unreachable_after": 5})
    started = time.monotonic()
    with pytest.raises(EndpointUnreachable, match=r"unreachable: \d+ connection failures in a row .*APIConnectionError"):
        Gateway(_endpoint(down, retry=retry, concurrency=4), store).run_sync(_requests(40), "s")
    assert time.monotonic() - started < 5  # not 40 requests x 6 attempts of backoff
    rows = _rows(store)
    # only the requests that were tried are recorded, as failures; the rest were never sent
    assert 1 <= len(rows) <= 4 and all(status == "failed" and err == "APIConnectionError"
                                      for status, _, err, _ in rows.values())
    with FaultServer() as srv:
        results = Gateway(_endpoint(srv.url, retry=retry, concurrency=4), store).run_sync(_requests(40), "s")
    assert all(r.ok for r in results) and sum(srv.stats.answered.values()) == 40


def test_timeouts_and_dropped_connections_between_answers_do_not_stop_a_batch(store):
    retry = FAST_RETRY.model_copy(update={"unreachable_after": 2, "max_attempts": 2, "request_timeout_s": 0.3})
    with FaultServer(FaultPlan(rate_slow=1.0, slow_s=2.0)) as srv:  # slow is not down
        results = Gateway(_endpoint(srv.url, retry=retry, concurrency=1), store).run_sync(_requests(3, "slow"), "s")
    assert [r.error_class for r in results] == ["APITimeoutError"] * 3
    with FaultServer(FaultPlan(script=("drop",))) as srv:  # each request: dropped once, then answered
        results = Gateway(_endpoint(srv.url, retry=retry, concurrency=1), store).run_sync(_requests(5, "drop"), "s")
    assert all(r.ok and r.attempts == 2 for r in results) and srv.stats.outcomes["drop"] == 5


@pytest.mark.parametrize("body", [
    None, [], "text", {}, {"choices": []}, {"choices": ["x"]}, {"choices": [{"message": None}]},
    {"choices": [{"message": {"content": 7}}]}, {"choices": [{"message": {"content": "  "}, "finish_reason": "length"}]},
    {"choices": [{"message": {"content": "ok"}}], "usage": {"prompt_tokens": "many"}},
])
def test_a_body_that_is_not_a_chat_completion_is_malformed_never_a_crash_or_an_answer(body):
    from lion_core.llm.gateway import MalformedResponse, parse_completion

    with pytest.raises(MalformedResponse):
        parse_completion(body)


def test_a_chat_completion_body_gives_its_text_finish_reason_and_token_counts():
    from lion_core.llm.gateway import parse_completion

    body = {"choices": [{"message": {"content": "hi"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1}}
    assert parse_completion(body) == ("hi", "stop", 3, 1)
    assert parse_completion({"choices": [{"message": {"content": "hi"}}]}) == ("hi", None, 0, 0)


def test_a_worker_that_fails_stops_the_whole_batch_before_its_store_closes(tmp_path):
    """A store write that fails (a full disk) ends the batch with that error; the other workers stop
    with it instead of going on sending on the shared event loop."""

    class FullDisk(ResponseStore):
        stored = 0

        def write_many(self, writes, holder):
            if self.stored + len(writes) > 10:
                raise sqlite3.OperationalError("database or disk is full")
            self.stored += len(writes)
            super().write_many(writes, holder)

    with FaultServer(FaultPlan(latency_s=0.02)) as srv, FullDisk(str(tmp_path / "r.sqlite")) as store:
        with pytest.raises(sqlite3.OperationalError, match="disk is full"):
            Gateway(_endpoint(srv.url, concurrency=8), store).run_sync(_requests(400), "imitation")
        # the requests already on the wire when the batch stopped land (the server stamps them as its
        # thread gets to them, later on a busy machine); after that nothing more arrives
        arrived, settled = -1, time.monotonic()
        while time.monotonic() - settled < 0.5:
            if (now := sum(len(t) for t in srv.stats.arrivals.values())) != arrived:
                arrived, settled = now, time.monotonic()
            time.sleep(0.05)
        time.sleep(1.0)
        assert sum(len(t) for t in srv.stats.arrivals.values()) == arrived  # nothing more was sent
        # and nothing more was written: no request recorded as failed by a worker left running
        statuses = [status for status, *_ in _rows(store).values()]
        assert statuses == ["ok"] * len(statuses) and 0 < len(statuses) <= 10  # a write that did not fit stored nothing
    assert arrived < 40  # the 10 stored, the few in flight with the failing one, not the 400
