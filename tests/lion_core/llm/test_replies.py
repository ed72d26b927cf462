"""Paid replies of no use (an empty completion, a refusal, an invalid finish reason): counted, retried on a
budget of their own across attempts and reruns, then recorded as failed and left alone unless asked."""

import pytest

from lion_core.config import ApiRole, Price, RateLimits, RetryPolicy
from lion_core.llm import ChatRequest, Endpoint, Gateway, ResponseStore
from lion_core.llm.replies import MalformedResponse, UnusableReply, parse_completion
from tests.fault_server import FaultPlan, FaultServer

RETRY = RetryPolicy(max_attempts=6, initial_backoff_s=0.01, max_backoff_s=0.05, request_timeout_s=5.0,
                    max_unusable_replies=2)
PRICE = Price(prompt_per_million=1.0, completion_per_million=2.0)
NEVER = "the NEVER-ANSWERED question"


def _endpoint(url, retry=RETRY):
    cfg = ApiRole(base_url=url, model="m", retry=retry, price=PRICE,
                  rate_limits=RateLimits(requests_per_minute=60000, max_concurrency=4))
    return Endpoint(role="teacher", endpoint_id="ep", model="m", base_url=url, api_model="m", config=cfg)


def _requests():
    return [ChatRequest.of([("user", f"question {i}")], max_tokens=16) for i in range(5)] + [
        ChatRequest.of([("user", NEVER)], max_tokens=16)]


@pytest.fixture
def store(tmp_path):
    with ResponseStore(str(tmp_path / "responses.sqlite")) as s:
        yield s


def test_an_always_empty_reply_is_paid_at_most_the_budget_over_reruns_then_only_on_request(store):
    with FaultServer(FaultPlan(empty_for=(NEVER,))) as srv:
        gateway = Gateway(_endpoint(srv.url), store)
        first = gateway.run_sync(_requests(), "imitation")
        assert [r.ok for r in first] == [True] * 5 + [False]
        bad = first[-1]
        assert bad.error_class == "UnusableReply" and "empty completion" in bad.error_message and bad.unusable == 2
        assert srv.stats.empty_replies[NEVER] == 2  # not max_attempts (6)
        # paid replies are costed, usable or not
        usage = gateway.accounting.row("teacher", "imitation")
        assert usage.completion_tokens > 0 and usage.cost_usd > 0 and usage.failures == 1
        # task retries and resumes do not send it again: its budget is spent
        for _ in range(2):
            again = Gateway(_endpoint(srv.url), store).run_sync(_requests(), "imitation")
            assert not again[-1].ok and again[-1].error_class == "UnusableReply"
        assert srv.stats.empty_replies[NEVER] == 2
        assert store.row(bad.key)["status"] == "failed" and store.row(bad.key)["unusable"] == 2
        # --retry-failed: as many more tries, once
        assert store.grant_unusable_again() == 1
        retried = Gateway(_endpoint(srv.url), store).run_sync(_requests(), "imitation")
        assert not retried[-1].ok and retried[-1].unusable == 2
        assert srv.stats.empty_replies[NEVER] == 4
        Gateway(_endpoint(srv.url), store).run_sync(_requests(), "imitation")  # and not again
        assert srv.stats.empty_replies[NEVER] == 4
    assert max(srv.stats.answered.values()) == 1  # the good ones were paid once


def test_retry_failed_keeps_an_answer_that_comes(store):
    with FaultServer(FaultPlan(empty_for=(NEVER,))) as srv:
        Gateway(_endpoint(srv.url), store).run_sync(_requests(), "imitation")
        srv.plan = FaultPlan()  # the provider's filter changed its mind
        store.grant_unusable_again()
        retried = Gateway(_endpoint(srv.url), store).run_sync(_requests(), "imitation")
    assert all(r.ok for r in retried)
    assert store.counts() == {"ok": 6}


def _body(content, finish="stop", **message):
    return {"choices": [{"message": {"role": "assistant", "content": content, **message}, "finish_reason": finish}],
            "usage": {"prompt_tokens": 7, "completion_tokens": 3}}


def test_parse_completion_tells_unusable_from_malformed():
    assert parse_completion(_body("fine")) == ("fine", "stop", 7, 3)
    with pytest.raises(UnusableReply, match="empty completion") as empty:
        parse_completion(_body("  "))
    assert (empty.value.prompt_tokens, empty.value.completion_tokens) == (7, 3)  # it was paid: its tokens count
    with pytest.raises(UnusableReply, match="refusal: I can't help"):
        parse_completion(_body(None, refusal="I can't help with that"))
    with pytest.raises(UnusableReply, match="content_filter"):
        parse_completion(_body("partial", "content_filter"), ("content_filter",))
    assert parse_completion(_body("cut", "length"), ("content_filter",))[1] == "length"  # accepted unless listed
    with pytest.raises(UnusableReply, match="'length'"):
        parse_completion(_body("cut", "length"), ("content_filter", "length"))
    with pytest.raises(MalformedResponse) as garbage:
        parse_completion({"choices": []})
    assert not isinstance(garbage.value, UnusableReply)
