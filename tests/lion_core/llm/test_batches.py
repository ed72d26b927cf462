"""The Batch API path: planned, submitted, collected through the real OpenAI client against the loopback
server's files and batches endpoints; durable across SIGKILL at every step of a batch's life."""

import json
import subprocess
import sys
from pathlib import Path

import openai
import pytest

from lion_core.config import ApiRole, BatchSettings, RateLimits, RetryPolicy
from lion_core.llm.batches import BatchRunner, plan_batches, request_line
from lion_core.llm.gateway import Endpoint, Gateway
from lion_core.llm.requests import ChatRequest
from lion_core.llm.responses import ResponseStore, StoredCall
from tests.fault_server import FaultPlan, FaultServer
from tests.lion_core.llm.batch_driver import STEPS
from tests.lion_core.llm.batch_driver import requests as driver_requests

REPO = Path(__file__).resolve().parents[3]


def _requests(n: int, tag: str = "q") -> list[ChatRequest]:
    return [ChatRequest.of([("user", f"{tag} {i}: name a river.")], temperature=0.0, max_tokens=16) for i in range(n)]


def _runner(srv: FaultServer, tmp_path: Path, location: str | None = None, **settings) -> BatchRunner:
    """On a SQLite store in tmp_path with its input files in a folder, or on `location` (PostgreSQL) with
    them in the ledger."""
    client = openai.OpenAI(base_url=srv.url, api_key="x", max_retries=0)
    store = ResponseStore(location or str(tmp_path / "responses.sqlite"))
    return BatchRunner(client, store, StoredCall(role="teacher", stage="imitation", endpoint=srv.url, model="m"), "m",
                       BatchSettings(**settings), None if location else tmp_path / "batches")


def _keys(srv: FaultServer, reqs: list[ChatRequest]) -> list[str]:
    return [r.key(srv.url, "m") for r in reqs]


def test_plan_keeps_each_batch_within_the_file_limits_and_the_token_room():
    reqs = [(f"k{i}", r) for i, r in enumerate(_requests(10))]
    line = len(json.dumps(request_line("k0", reqs[0][1], "m")).encode()) + 1
    assert [len(b) for b in plan_batches(reqs, "m", BatchSettings(max_requests_per_batch=4), 10**9)] == [4, 4, 2]
    by_bytes = plan_batches(reqs, "m", BatchSettings(max_bytes_per_batch=3 * line + 2), 10**9)
    assert all(len(b) <= 3 for b in by_bytes) and sum(map(len, by_bytes)) == 10
    est = reqs[0][1].estimated_tokens()
    assert sum(map(len, plan_batches(reqs, "m", BatchSettings(), 3 * est))) == 3  # the rest waits
    assert sum(map(len, plan_batches(reqs, "m", BatchSettings(), 1))) == 1  # one always goes, or nothing ever would


def test_answers_land_in_the_response_store_under_the_interactive_keys(tmp_path, store_location):
    with FaultServer() as srv:
        runner = _runner(srv, tmp_path, store_location if "://" in store_location else None)
        reqs = _requests(7)
        p = runner.advance(reqs)
        assert p.done and p.answered == 7 and p.batches_submitted_now == 1 and srv.stats.batches_created == 1
        stored = runner.store.successes(_keys(srv, reqs))
        assert len(stored) == 7 and all(r.text.startswith("Answer to:") for r in stored.values())
        # the interactive gateway finds them all: switching a role's mode pays nothing twice
        ep = Endpoint(role="teacher", endpoint_id=srv.url, model="m", base_url=srv.url, api_model="m",
                      config=ApiRole(base_url=srv.url, model="m"))
        gw = Gateway(ep, runner.store)
        assert all(r.cached for r in gw.run_sync(reqs, "imitation"))
        assert sum(srv.stats.answered.values()) == 0  # no interactive call was made
        assert runner.advance(reqs).batches_submitted_now == 0 and srv.stats.batches_created == 1


def test_requests_answered_interactively_are_not_batched(tmp_path):
    with FaultServer() as srv:
        runner = _runner(srv, tmp_path)
        reqs = _requests(6)
        ep = Endpoint(role="teacher", endpoint_id=srv.url, model="m", base_url=srv.url, api_model="m",
                      config=ApiRole(base_url=srv.url, model="m", rate_limits=RateLimits(max_concurrency=2),
                                     retry=RetryPolicy(initial_backoff_s=0.01, max_backoff_s=0.02)))
        Gateway(ep, runner.store).run_sync(reqs[:4], "imitation")
        p = runner.advance(reqs)
        assert p.done and p.answered == 6
        assert sum(srv.stats.batch_answered.values()) == 2  # only the two not answered before


def test_batches_are_submitted_as_earlier_ones_finish_within_the_token_cap(tmp_path):
    with FaultServer(FaultPlan(batch_complete_after_s=0.3)) as srv:
        reqs = _requests(9)
        est = reqs[0].estimated_tokens()
        runner = _runner(srv, tmp_path, max_requests_per_batch=3, max_enqueued_tokens=6 * est)
        p = runner.advance(reqs)
        assert (p.batches_submitted_now, p.pending, srv.stats.batches_created) == (2, 9, 2)  # 6 fit the cap
        import time
        time.sleep(0.35)
        p = runner.advance(reqs)  # the two finish; the third is submitted
        assert p.answered == 6 and srv.stats.batches_created == 3 and p.pending == 3
        time.sleep(0.35)
        p = runner.advance(reqs)
        assert p.done and p.answered == 9 and srv.stats.batches_created == 3


def test_request_errors_are_recorded_with_their_reason_and_batched_again_up_to_the_attempts(tmp_path):
    with FaultServer(FaultPlan(batch_error_rate=1.0)) as srv:
        reqs = _requests(4)
        runner = _runner(srv, tmp_path, max_attempts=2, on_exhausted="fail")
        p = runner.advance(reqs)
        row = runner.store.row(_keys(srv, reqs)[0])
        assert row["status"] == "failed" and row["error_class"] == "BatchRequestError500"
        assert "server had an error" in row["error_message"] and p.pending == 4  # to be batched again
        p = runner.advance(reqs)
        assert srv.stats.batches_created == 2 and p.failed == 4 and p.pending == 0 and p.exhausted
        assert runner.store.row(_keys(srv, reqs)[0])["attempts"] == 2
        assert runner.advance(reqs).batches_submitted_now == 0  # bounded: no third batch


def test_spent_requests_go_back_to_the_caller_for_an_interactive_call(tmp_path):
    with FaultServer(FaultPlan(batch_error_rate=1.0)) as srv:
        reqs = _requests(3)
        runner = _runner(srv, tmp_path, max_attempts=1, on_exhausted="interactive")
        p = runner.advance(reqs)
        p = runner.advance(reqs)
        assert p.done and p.failed == 0 and set(p.exhausted) == set(_keys(srv, reqs))


@pytest.mark.parametrize("outcome", ["expired", "cancelled", "failed"])
def test_a_batch_that_ends_early_keeps_what_it_answered_and_the_rest_is_batched_again(tmp_path, outcome):
    with FaultServer(FaultPlan(batch_outcomes=(outcome,))) as srv:
        reqs = _requests(6)
        runner = _runner(srv, tmp_path)
        p = runner.advance(reqs)
        answered_first = {"expired": 3, "cancelled": 0, "failed": 0}[outcome]
        assert p.answered == answered_first and p.pending == 6 - answered_first
        failed = [runner.store.row(k) for k in _keys(srv, reqs) if runner.store.row(k)["status"] == "failed"]
        assert len(failed) == 6 - answered_first
        assert failed[0]["error_class"] == f"Batch{outcome.capitalize()}"
        p = runner.advance(reqs)
        assert p.done and p.answered == 6 and srv.stats.batches_created == 2
        assert max(srv.stats.batch_answered.values()) == 1


def test_failed_uploads_are_retried_then_given_up_with_the_reason(tmp_path):
    with FaultServer(FaultPlan(upload_500=2)) as srv:
        reqs = _requests(3)
        runner = _runner(srv, tmp_path, max_attempts=3)
        assert runner.advance(reqs).pending == 3
        assert runner.advance(reqs).pending == 3
        assert runner.advance(reqs).done and srv.stats.batches_created == 1
    with FaultServer(FaultPlan(upload_500=99)) as srv:
        reqs = _requests(3)
        runner = _runner(srv, tmp_path / "b", max_attempts=2, on_exhausted="fail")
        runner.advance(reqs)
        p = runner.advance(reqs)
        row = runner.store.row(_keys(srv, reqs)[0])
        assert row["error_class"] == "BatchNotSubmitted" and "InternalServerError" in row["error_message"]
        p = runner.advance(reqs)
        assert p.failed == 3 and p.pending == 0 and srv.stats.batches_created == 0


def test_a_5xx_on_retrieve_waits_for_the_next_pass_and_creates_no_second_batch(tmp_path):
    with FaultServer(FaultPlan(batch_retrieve_500=2)) as srv:
        reqs = _requests(4)
        runner = _runner(srv, tmp_path)
        assert runner.advance(reqs).pending == 4
        assert runner.advance(reqs).pending == 4
        assert runner.advance(reqs).done and srv.stats.batches_created == 1


@pytest.mark.parametrize("step", STEPS)
def test_sigkill_at_any_step_then_a_resume_creates_no_second_batch_and_loses_nothing(tmp_path, step, store_location):
    """On PostgreSQL the input files are in the ledger too: the resume needs nothing of the killed process's disk."""
    n = 8
    shared = "://" in store_location
    with FaultServer(FaultPlan(batch_complete_after_s=0.0)) as srv:
        def drive(*extra: str) -> subprocess.CompletedProcess:
            return subprocess.run([sys.executable, "-m", "tests.lion_core.llm.batch_driver", store_location,
                                   "-" if shared else str(tmp_path / "batches"), srv.url, str(n), *extra], cwd=REPO,
                                  capture_output=True, text=True, timeout=120)

        killed = drive("--kill-at", step)
        assert killed.returncode == -9, killed.stderr[-2000:]
        resumed = drive("--passes", "2")
        assert resumed.returncode == 0, resumed.stderr[-2000:]
        assert json.loads(resumed.stdout.splitlines()[-1]) == {"answered": n, "pending": 0, "failed": 0, "live": 0}
        assert srv.stats.batches_created == 1  # the batch of the killed process, found again, never a second
        assert sorted(srv.stats.batch_answered.values()) == [1] * n  # each request answered once
        store = ResponseStore(store_location)
        assert len(store.successes([r.key(srv.url, "m") for r in driver_requests(n)])) == n
        assert not list((tmp_path / "batches").glob("*.jsonl"))  # input files go once collected
        assert store._db.one("SELECT COUNT(*) FROM batch_inputs")[0] == 0
        assert not shared or not (tmp_path / "batches").exists()  # on PostgreSQL nothing went to a local disk
        store.close()


def test_sigkill_while_waiting_then_a_resume_continues_with_the_same_batch(tmp_path):
    n = 5
    with FaultServer(FaultPlan(batch_complete_after_s=1.0)) as srv:
        def drive() -> dict:
            r = subprocess.run([sys.executable, "-m", "tests.lion_core.llm.batch_driver", str(tmp_path / "r.sqlite"),
                                str(tmp_path / "batches"), srv.url, str(n)], cwd=REPO, capture_output=True, text=True,
                               timeout=120)
            assert r.returncode == 0, r.stderr[-2000:]
            return json.loads(r.stdout.splitlines()[-1])

        assert drive() == {"answered": 0, "pending": n, "failed": 0, "live": 1}  # submitted; then the process ends
        import time
        time.sleep(1.1)
        assert drive() == {"answered": n, "pending": 0, "failed": 0, "live": 0}
        assert srv.stats.batches_created == 1 and sorted(srv.stats.batch_answered.values()) == [1] * n
