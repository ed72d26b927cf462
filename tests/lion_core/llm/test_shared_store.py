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
