"""Spending caps: a request that could take the run past a cap is not sent; the batch stops with every
paid answer stored; a raised cap goes on without paying twice (real HTTP on loopback)."""

import pytest

from lion_core.config import ApiRole, BudgetConfig, Price, RateLimits, RetryPolicy
from lion_core.errors import BudgetExhausted
from lion_core.llm import ChatRequest, Endpoint, Gateway, ResponseStore
from lion_core.llm.budget import Budget, worst_case_usd
from tests.fault_server import FaultServer

PRICE = Price(prompt_per_million=1000.0, completion_per_million=2000.0)  # dear, so a few requests cost cents


def _endpoint(url, role="teacher"):
    cfg = ApiRole(base_url=url, model="m", price=PRICE, retry=RetryPolicy(initial_backoff_s=0.01),
                  rate_limits=RateLimits(requests_per_minute=60000, max_concurrency=8))
    return Endpoint(role=role, endpoint_id="ep", model="m", base_url=url, api_model="m", config=cfg)


def _requests(n, prefix="question"):
    return [ChatRequest.of([("user", f"{prefix} {i}")], max_tokens=16) for i in range(n)]


@pytest.fixture
def store(tmp_path):
    with ResponseStore(str(tmp_path / "responses.sqlite")) as s:
        yield s


def test_a_capped_batch_stops_within_the_cap_and_a_raised_cap_pays_only_the_rest(store):
    reqs = _requests(60)
    with FaultServer() as srv:
        # what the whole batch costs, on a store of its own
        with ResponseStore(store.path + ".uncapped") as other:
            Gateway(_endpoint(srv.url), other, budget=Budget(BudgetConfig(), "uncapped", "teacher", other)).run_sync(reqs, "s")
            full = other.spent("uncapped")["teacher"]
        srv.stats.answered.clear()
        cap = full / 2
        gateway = Gateway(_endpoint(srv.url), store, budget=Budget(BudgetConfig(max_cost_usd=cap), "r1", "teacher", store))
        with pytest.raises(BudgetExhausted, match=rf"budget.max_cost_usd \(\${cap:.2f}\) reached: run r1 has spent") as stop:
            gateway.run_sync(reqs, "s")
        assert "--resume r1" in str(stop.value)
        spent = store.spent("r1")["teacher"]
        answered = sum(srv.stats.answered.values())
        assert spent <= cap and 0 < answered < 60
        assert store.counts() == {"ok": answered}  # every paid answer stored, nothing recorded as failed
        assert spent == pytest.approx(full * answered / 60, rel=0.2)
        # the cap raised: the rest is sent, nothing twice
        raised = Gateway(_endpoint(srv.url), store, budget=Budget(BudgetConfig(max_cost_usd=full * 2), "r1", "teacher", store))
        assert all(r.ok for r in raised.run_sync(reqs, "s"))
    assert max(srv.stats.answered.values()) == 1 and sum(srv.stats.answered.values()) == 60
    assert store.spent("r1")["teacher"] == pytest.approx(full)
    assert store.paid_calls("r1")["teacher"] == 60


def test_a_role_cap_stops_that_role_only(store):
    budget = BudgetConfig(per_role={"referee": 0.1})  # two or three requests
    with FaultServer() as srv:
        Gateway(_endpoint(srv.url), store, budget=Budget(budget, "r", "teacher", store)).run_sync(_requests(10), "s")
        with pytest.raises(BudgetExhausted, match=r"budget.per_role.referee \(\$0.10\) reached"):
            Gateway(_endpoint(srv.url, "referee"), store, budget=Budget(budget, "r", "referee", store)).run_sync(
                _requests(10, "judge"), "s")
    spent = store.spent("r")
    assert 0 < spent["referee"] <= 0.1 < spent["teacher"]


def test_reservations_of_requests_in_flight_count(store):
    budget = Budget(BudgetConfig(max_cost_usd=1.0), "r", "teacher", store)
    request = _requests(1)[0]
    worst = worst_case_usd(request, PRICE, 512)
    assert worst == pytest.approx((request.estimated_tokens() - 16) * 1000 / 1e6 + 16 * 2000 / 1e6)
    held = [budget.reserve(0.3) for _ in range(4)]
    assert held == [True, True, True, False] and "in flight" in budget.refused
    for _ in range(3):
        budget.settle(0.3, 0.1)
    assert store.spent("r")["teacher"] == pytest.approx(0.3)
    other = Budget(BudgetConfig(max_cost_usd=1.0), "r", "teacher", store)
    assert other.reserve(0.7) and not other.reserve(0.01)


def test_a_request_without_max_tokens_reserves_the_configured_reply():
    request = ChatRequest.of([("user", "x" * 400)])
    assert worst_case_usd(request, PRICE, 100) == pytest.approx(
        (request.estimated_tokens() - 256) * 1000 / 1e6 + 100 * 2000 / 1e6)


def test_batches_are_submitted_only_within_the_cap_and_their_answers_are_spent(tmp_path):
    import openai

    from lion_core.config import BatchSettings
    from lion_core.llm.batches import BatchRunner
    from lion_core.llm.responses import StoredCall

    reqs = _requests(20)
    worst = worst_case_usd(reqs[0], PRICE, 512)
    with FaultServer() as srv, ResponseStore(str(tmp_path / "responses.sqlite")) as store:
        budget = Budget(BudgetConfig(max_cost_usd=worst * 4.5), "r", "teacher", store)
        runner = BatchRunner(openai.OpenAI(base_url=srv.url, api_key="x", max_retries=0), store,
                             StoredCall(role="teacher", stage="imitation", endpoint=srv.url, model="m"), "m",
                             BatchSettings(), tmp_path / "batches", price=PRICE, budget=budget)
        first = runner.advance(reqs)
        assert first.answered == 4 and not first.done  # only what fits at the worst case went
        spent = store.spent("r")["teacher"]
        assert 0 < spent <= worst * 4.5 and store.paid_calls("r")["teacher"] == 4
        # collected at what the answers really cost: the room left takes a few more, then the cap stops it
        with pytest.raises(BudgetExhausted, match=r"budget.max_cost_usd .* reached"):
            for _ in range(20):
                runner.advance(reqs)
        assert store.spent("r")["teacher"] <= worst * 4.5
        assert len(store.successes([r.key(srv.url, "m") for r in reqs])) < 20
        runner.close()
