"""A stage in batch mode: replayed against the response store, its rounds sent as batches through the
real OpenAI client to the loopback server, with the same outcome as the interactive path."""

import time

import pytest

from lion_core.config import ApiRole, BatchSettings, Price, RateLimits, RetryPolicy
from lion_core.discrimination.judging import JudgeItem, discriminate
from lion_core.llm.accounting import Accounting
from lion_core.llm.gateway import Endpoint, Gateway
from lion_core.llm.replay import NeedAnswers, StoreGateway, batch_pass, batch_runner
from lion_core.llm.requests import ChatRequest
from lion_core.llm.responses import ResponseStore
from tests.fault_server import FaultPlan, FaultServer


def _endpoint(url: str, role: str = "referee", **batch) -> Endpoint:
    cfg = ApiRole(base_url=url, model="m", mode="batch", batch=BatchSettings(**batch),
                  price=Price(prompt_per_million=2.0, completion_per_million=4.0),
                  rate_limits=RateLimits(requests_per_minute=60000, max_concurrency=4),
                  retry=RetryPolicy(max_attempts=2, initial_backoff_s=0.01, max_backoff_s=0.02, request_timeout_s=5))
    return Endpoint(role=role, endpoint_id="api", model="m", base_url=url, api_model="m", config=cfg)


def two_rounds(gw, n: int = 3) -> list[str]:
    """A stage whose second round depends on the first round's answers (as re-asks and generator rounds do)."""
    first = gw.run_sync([ChatRequest.of([("user", f"q{i}: name a river")], max_tokens=16) for i in range(n)], "s")
    second = gw.run_sync([ChatRequest.of([("user", f"and after {r.text}?")], max_tokens=16) for r in first], "s")
    return [r.text if r.ok else f"failed: {r.error_class}" for r in second]


def _items(n: int) -> list[JudgeItem]:
    return [JudgeItem(f"id{i}", f"Explain topic {i}.", "", f"Answer to: topic {i}", f"a guess about {i}")
            for i in range(n)]


def test_the_store_gateway_names_what_the_store_lacks_and_sends_nothing(tmp_path):
    with FaultServer() as srv, ResponseStore(str(tmp_path / "r.sqlite")) as store:
        gw = StoreGateway(_endpoint(srv.url), store, settled=lambda keys: set())
        with pytest.raises(NeedAnswers) as err:
            two_rounds(gw)
        assert len(err.value.requests) == 3 and "not answered in the response store" in str(err.value)
        assert sum(srv.stats.answered.values()) == 0 and srv.stats.batches_created == 0


def test_a_stage_of_two_rounds_completes_through_batches_alone_with_the_interactive_outcome(tmp_path):
    with FaultServer() as srv:
        ep = _endpoint(srv.url)
        with ResponseStore(str(tmp_path / "interactive.sqlite")) as store:
            expected = two_rounds(Gateway(ep, store))
            judged = discriminate(Gateway(ep, store), _items(4), style="lion", tau=1.0, max_reasks=1)
        interactive_calls = sum(srv.stats.answered.values())
        accounting = Accounting()
        with ResponseStore(str(tmp_path / "batch.sqlite")) as store:
            runner = batch_runner(ep, store, "s", accounting)
            look = batch_pass(two_rounds, ep, store, runner)
            assert look.done and look.batches_submitted == 2  # one batch per round, in one look
            assert two_rounds(StoreGateway(ep, store, runner.settled)) == expected
            look = batch_pass(lambda gw: discriminate(gw, _items(4), style="lion", tau=1.0, max_reasks=1),
                              ep, store, runner)
            assert look.done
            replayed = discriminate(StoreGateway(ep, store, runner.settled), _items(4), style="lion", tau=1.0,
                                    max_reasks=1)
            runner.close()
        assert replayed == judged
        assert sum(srv.stats.answered.values()) == interactive_calls  # nothing more was asked interactively
        assert sum(srv.stats.batch_answered.values()) == 6 + 8
        (row,) = [r for r in accounting.table() if r.stage == "s"]
        assert row.mode == "batch" and row.calls == 14 and row.failures == 0
        # at the batch price: half of the role's interactive price
        assert row.cost_usd == pytest.approx((row.prompt_tokens * 1.0 + row.completion_tokens * 2.0) / 1e6)
        assert row.cost_usd > 0


def test_a_look_while_batches_are_in_progress_returns_at_once_and_the_next_one_goes_on(tmp_path):
    with FaultServer(FaultPlan(batch_complete_after_s=1.0)) as srv, \
            ResponseStore(str(tmp_path / "r.sqlite")) as store:
        ep = _endpoint(srv.url)
        runner = batch_runner(ep, store, "s")
        started = time.monotonic()
        look = batch_pass(two_rounds, ep, store, runner)
        assert time.monotonic() - started < 1.0
        assert not look.done and look.pending == 3 and look.total == 3 and look.batches_live == 1
        time.sleep(1.1)
        look = batch_pass(two_rounds, ep, store, runner)  # round one back, round two submitted
        assert not look.done and look.batches_submitted == 1 and look.pending == 3
        time.sleep(1.1)
        assert batch_pass(two_rounds, ep, store, runner).done
        assert srv.stats.batches_created == 2 and sum(srv.stats.answered.values()) == 0
        runner.close()


def test_spent_requests_are_asked_interactively_once_when_the_config_says_so(tmp_path):
    with FaultServer(FaultPlan(batch_error_rate=1.0)) as srv, ResponseStore(str(tmp_path / "r.sqlite")) as store:
        ep = _endpoint(srv.url, max_attempts=1, on_exhausted="interactive")
        runner = batch_runner(ep, store, "s")
        look = batch_pass(two_rounds, ep, store, runner, ask_interactively=lambda reqs: Gateway(ep, store).run_sync(reqs, "s"))
        assert look.done and look.asked_interactively == 6
        assert sum(srv.stats.answered.values()) == 6 and srv.stats.batches_created == 2
        assert all(not t.startswith("failed") for t in two_rounds(StoreGateway(ep, store, runner.settled)))
        runner.close()


def test_spent_requests_stay_recorded_failures_when_the_config_says_fail(tmp_path):
    with FaultServer(FaultPlan(batch_error_rate=1.0)) as srv, ResponseStore(str(tmp_path / "r.sqlite")) as store:
        ep = _endpoint(srv.url, max_attempts=2, on_exhausted="fail")
        runner = batch_runner(ep, store, "s")
        look = batch_pass(two_rounds, ep, store, runner)
        assert not look.done and look.pending == 3  # the first batch failed; its requests go in a second one
        # round one's second batch fails too: its requests are failures, and round two (asked about
        # those failures) gets its first batch
        look = batch_pass(two_rounds, ep, store, runner)
        assert not look.done and look.batches_submitted == 2 and look.pending == 1  # three alike: one request
        assert batch_pass(two_rounds, ep, store, runner).done
        assert srv.stats.batches_created == 4
        gw = StoreGateway(ep, store, runner.settled)
        assert two_rounds(gw) == ["failed: BatchRequestError500"] * 3
        assert sum(srv.stats.answered.values()) == 0  # never interactively
        runner.close()


def test_a_request_refused_as_it_is_is_not_batched_again_but_asked_interactively(tmp_path):
    # a 400 (context length) per request: another batch would be refused too; the interactive path can cut it
    with FaultServer(FaultPlan(batch_error_rate=1.0, batch_error_status=400)) as srv, \
            ResponseStore(str(tmp_path / "r.sqlite")) as store:
        ep = _endpoint(srv.url, max_attempts=3, on_exhausted="interactive")
        runner = batch_runner(ep, store, "s")
        look = batch_pass(two_rounds, ep, store, runner, ask_interactively=lambda reqs: Gateway(ep, store).run_sync(reqs, "s"))
        assert look.done and srv.stats.batches_created == 2  # one batch per round, none repeated
        assert look.asked_interactively == 6 and sum(srv.stats.answered.values()) == 6
        runner.close()


def test_a_batch_the_provider_no_longer_shows_stops_the_look_with_its_id(tmp_path):
    from lion_core.llm.batches import BatchJobError

    with FaultServer(FaultPlan(batch_complete_after_s=60)) as srv, ResponseStore(str(tmp_path / "r.sqlite")) as store:
        ep = _endpoint(srv.url)
        runner = batch_runner(ep, store, "s")
        assert not batch_pass(two_rounds, ep, store, runner).done
        (bid,) = list(srv.batches)
        del srv.batches[bid]  # e.g. a resume with another project's key: the batch is a 404 now
        with pytest.raises(BatchJobError, match=bid):
            batch_pass(two_rounds, ep, store, runner)
        assert srv.stats.batches_created == 1  # its requests were not submitted again
        runner.close()


def test_a_role_switched_back_to_interactive_collects_its_batches_before_asking_again(tmp_path):
    from lion_core.llm.batches import live_batch_count

    with FaultServer(FaultPlan(batch_complete_after_s=0.5)) as srv, ResponseStore(str(tmp_path / "r.sqlite")) as store:
        ep = _endpoint(srv.url)
        runner = batch_runner(ep, store, "s")
        assert not batch_pass(two_rounds, ep, store, runner).done
        assert live_batch_count(store.path, "api", "m") == 1 and live_batch_count(store.path, "other", "m") == 0
        time.sleep(0.6)
        assert runner.drive_live() == 0 and live_batch_count(store.path, "api", "m") == 0
        # the first round's answers are in the store: an interactive gateway asks only the second round
        interactive = Gateway(_endpoint(srv.url), store)
        two_rounds(interactive)
        assert sum(srv.stats.answered.values()) == 3 and srv.stats.batches_created == 1
        runner.close()
    assert live_batch_count(str(tmp_path / "none.sqlite"), "api", "m") == 0
