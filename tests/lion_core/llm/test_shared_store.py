"""Workers sharing one response store: the gateway claims each request in the store before it sends it, so
workers racing for the same requests (shards, processes, machines) pay for each once."""

import multiprocessing
import random
import time

from lion_core.config import ApiRole, RateLimits, RetryPolicy
from lion_core.llm import ChatRequest, Endpoint, Gateway, ResponseStore
from tests.fault_server import FaultPlan, FaultServer


def _endpoint(url: str, concurrency: int = 8) -> Endpoint:
    cfg = ApiRole(base_url=url, model="m", retry=RetryPolicy(max_attempts=3, initial_backoff_s=0.02, max_backoff_s=0.2),
                  rate_limits=RateLimits(requests_per_minute=60000, max_concurrency=concurrency))
    return Endpoint(role="teacher", endpoint_id="test-endpoint", model="m", base_url=url, api_model="m", config=cfg)


def _requests(n: int) -> list[ChatRequest]:
    return [ChatRequest.of([("user", f"shared {i}")], max_tokens=8, tag=f"t{i}") for i in range(n)]


def _work(location: str, url: str, n: int, seed: int, start, out) -> None:
    """One worker: the same stage's requests, in an order of its own, with the store at `location`."""
    reqs = _requests(n)
    random.Random(seed).shuffle(reqs)
    with ResponseStore(location) as store:
        start.wait(timeout=60)  # both open the store, then start together
        results = Gateway(_endpoint(url, concurrency=8), store).run_sync(reqs, "imitation")
    out.put((sum(r.ok for r in results), sum(not r.cached for r in results)))


def test_two_worker_processes_on_one_store_pay_each_request_once(store_location):
    n = 120
    ctx = multiprocessing.get_context("spawn")
    with FaultServer(FaultPlan(latency_s=0.05)) as srv:
        out = ctx.Queue()
        start = ctx.Barrier(2)
        procs = [ctx.Process(target=_work, args=(store_location, srv.url, n, seed, start, out)) for seed in (1, 2)]
        for p in procs:
            p.start()
        got = [out.get(timeout=120) for _ in procs]
        for p in procs:
            p.join(timeout=30)
        assert [ok for ok, _ in got] == [n, n]  # each worker has every answer
        sent = [s for _, s in got]
        assert sum(sent) == n and min(sent) > 0, sent  # they split the requests between them
        assert sum(srv.stats.answered.values()) == n and set(srv.stats.answered.values()) == {1}  # each paid once
    with ResponseStore(store_location) as store:
        assert store.claims() == {}  # every claim given back


def test_a_request_another_worker_has_in_flight_is_waited_for(store_location):
    """A worker that finds a request claimed waits for its answer; when the holder stops renewing (its
    machine is gone), the claim runs out and the worker sends it itself, once."""
    reqs = _requests(3)
    with FaultServer() as srv, ResponseStore(store_location, lease_s=2.0) as store:
        gw = Gateway(_endpoint(srv.url), store)
        keys = [r.key("test-endpoint", "m") for r in reqs]
        assert store.claim(keys[0], "other-host|boot|ns|4242|gone")  # held by a worker elsewhere that died
        started = time.monotonic()
        results = gw.run_sync(reqs, "imitation")
        waited = time.monotonic() - started
        assert all(r.ok for r in results) and 1.5 < waited < 10, waited
        assert sum(srv.stats.answered.values()) == 3 and set(srv.stats.answered.values()) == {1}
        assert store.claims() == {}


def test_claims_are_renewed_while_a_request_outlasts_its_lease(store_location):
    """A reply slower than the lease: the batch renews its claim, so another worker never takes it."""
    import threading

    from lion_core.llm.claims import Holder

    req = _requests(1)
    key = req[0].key("test-endpoint", "m")
    taken: list[bool] = []
    with FaultServer(FaultPlan(latency_s=3.0)) as srv, ResponseStore(store_location, lease_s=1.0) as store:
        other, done = Holder.new().name, threading.Event()

        def rival() -> None:
            with ResponseStore(store_location, lease_s=1.0) as mine:
                while key not in mine.claims() and not done.is_set():  # the batch has it first
                    time.sleep(0.01)
                while not done.is_set():
                    taken.append(mine.claim(key, other))
                    time.sleep(0.1)

        t = threading.Thread(target=rival)
        t.start()
        try:
            (result,) = Gateway(_endpoint(srv.url), store).run_sync(req, "imitation")
        finally:
            done.set()
            t.join()
        assert result.ok and sum(srv.stats.answered.values()) == 1
    assert len(taken) > 20 and not any(taken[:-3])  # held all along (the last looks may follow the answer)


def test_a_row_the_database_refuses_fails_alone(store_location):
    """A group of answers in which one cannot be stored: the others are, and only its writer learns of it."""
    class Picky(ResponseStore):
        def write_many(self, writes, holder):
            if any("refuse me" in str(w.request.api_messages()) for w in writes):
                raise ValueError("refused")
            super().write_many(writes, holder)

    reqs = _requests(30) + [ChatRequest.of([("user", "refuse me")], max_tokens=8, tag="bad")]
    with FaultServer(FaultPlan(latency_s=0.02)) as srv, Picky(store_location) as store:
        try:
            Gateway(_endpoint(srv.url), store).run_sync(reqs, "imitation")
        except ValueError:
            pass
        stored = store.successes([r.key("test-endpoint", "m") for r in reqs])
        answered = sum(srv.stats.answered.values())
    assert "refuse me" not in str([r.text for r in stored.values()])
    assert len(stored) == answered - 1  # every answer the server gave is stored but the refused one


def test_a_reply_with_a_nul_is_stored_on_both_backends(store_location):
    from lion_core.llm.requests import ChatResult
    from lion_core.llm.responses import StoredCall

    call = StoredCall(role="teacher", stage="imitation", endpoint="e", model="m")
    with ResponseStore(store_location) as store:
        store.put_success(call, _requests(1)[0], ChatResult(key="k", ok=True, text="a\x00b", attempts=1), 0.1)
        assert store.successes(["k"])["k"].text == "a\ufffdb"


def test_a_request_another_worker_gave_up_on_while_this_one_waited_is_not_sent_again_in_this_pass(store_location):
    import threading

    from lion_core.llm.requests import ChatResult
    from lion_core.llm.responses import StoredCall

    reqs = _requests(2)
    key = reqs[0].key("test-endpoint", "m")
    call = StoredCall(role="teacher", stage="imitation", endpoint="test-endpoint", model="m")
    with FaultServer() as srv, ResponseStore(store_location, lease_s=60.0) as store:
        store.claim(key, "other-host|boot|ns|4242|alive")  # another worker is sending it

        def other_gives_up() -> None:
            time.sleep(0.5)
            with ResponseStore(store_location) as mine:
                mine.put_failure(call, reqs[0], ChatResult(key=key, ok=False, attempts=3, error_class="InternalServerError",
                                                           error_message="boom"), release="other-host|boot|ns|4242|alive")

        t = threading.Thread(target=other_gives_up)
        t.start()
        results = Gateway(_endpoint(srv.url), store).run_sync(reqs, "imitation")
        t.join()
        assert results[1].ok and not results[0].ok and results[0].attempts == 3
        assert results[0].error_class == "InternalServerError"
        assert sum(srv.stats.answered.values()) == 1 and sum(srv.stats.outcomes.values()) == 1  # only the other one
