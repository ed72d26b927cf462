"""Global concurrency limits on a real (test) Prefect API."""

import pytest
from prefect import get_client

from lion_core.config import parse_config
from lion_core.llm.accounting import Accounting
from lion_core.llm.gateway import Endpoint, Gateway
from lion_core.llm.requests import ChatRequest
from lion_core.llm.responses import ResponseStore
from lion_prefect.limits import apply_limits
from lion_prefect.slots import SlottedGateway
from tests.fault_server import FaultServer

API = {"base_url": "http://127.0.0.1:9/v1", "model": "m", "api_key_env": "LION_TEST_KEY"}


def _slots(name):
    with get_client(sync_client=True) as client:
        return client.read_global_concurrency_limit_by_name(name).limit


def test_apply_creates_then_updates_and_a_flow_leaves_tuned_limits_alone(prefect_harness, monkeypatch):
    monkeypatch.setenv("LION_TEST_KEY", "sk-test-limits")
    cfg = parse_config({r: API for r in ("teacher", "referee", "generator")} | {"orchestration": {"shards_in_flight_per_key": 3}})
    rows = apply_limits(cfg)
    (row,) = [r for r in rows if "teacher" in r["roles"]]
    name = row["name"]
    assert row["action"] == "created" and row["roles"] == ["teacher", "referee", "generator", "judge"]
    assert _slots(name) == 3 and "sk-test" not in name
    bigger = parse_config({r: API for r in ("teacher", "referee", "generator")}
                          | {"orchestration": {"shards_in_flight_per_key": 5}})

    def action(update):
        return next(r["action"] for r in apply_limits(bigger, update=update) if r["name"] == name)

    assert action(False) == "exists" and _slots(name) == 3  # what a flow does: a tuned limit stays
    assert action(True) == "updated" and _slots(name) == 5  # `lion limits apply`
    assert action(True) == "kept"


def test_a_shard_without_its_limit_fails_instead_of_running_unthrottled(prefect_harness, tmp_path):
    cfg = parse_config({})
    with FaultServer() as api, ResponseStore(str(tmp_path / "r.sqlite")) as rs:
        gw = Gateway(Endpoint.from_config("teacher", cfg.teacher, embedded=(api.url, "m")), rs, Accounting())
        slotted = SlottedGateway(gw, "lion-api-no-such-limit", chunk=4)
        with pytest.raises(Exception, match="no-such-limit"):
            slotted.run_sync([ChatRequest.of([("user", "hello")], tag="a")], "imitation")
        assert sum(api.stats.answered.values()) == 0


def test_the_gpu_limit_lets_one_gpu_task_run_at_a_time_across_runs(prefect_harness):
    """`lion limits apply` sets the `gpu` tag's limit; two flows' GPU tasks then never overlap."""
    import threading
    import time

    from prefect import flow, task

    from lion_core.limits import GPU_LIMIT, GPU_TAG
    from lion_prefect.limits import apply_gpu_limit

    spans = []

    @task(tags=[GPU_TAG])
    def fine_tune(name: str) -> None:
        start = time.monotonic()
        time.sleep(1.5)
        spans.append((start, time.monotonic(), name))

    @flow
    def one_run(name: str) -> None:
        fine_tune(name)

    try:
        assert apply_gpu_limit(parse_config({"orchestration": {"gpu_slots": 1}}))["action"] == "created"
        assert _slots(GPU_LIMIT) == 1
        assert apply_gpu_limit(parse_config({"orchestration": {"gpu_slots": 1}}))["action"] == "kept"
        runs = [threading.Thread(target=one_run, args=(f"run-{i}",)) for i in range(2)]
        for t in runs:
            t.start()
        for t in runs:
            t.join(120)
        (a_start, a_end, _), (b_start, b_end, _) = sorted(spans)
        assert len(spans) == 2 and b_start >= a_end  # the second waited for the first's slot
        assert apply_gpu_limit(parse_config({"orchestration": {"gpu_slots": 2}}))["action"] == "updated"
        assert _slots(GPU_LIMIT) == 2
    finally:  # the session's other tests run without a GPU limit, as runs do unless it is applied
        with get_client(sync_client=True) as client:
            client.delete_global_concurrency_limit_by_name(GPU_LIMIT)
