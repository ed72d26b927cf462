import json
import os
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SECRET = "sk-lion-test-" + "7f3a9c" * 6
KEY_ENV = "LION_FLOW_TEST_KEY"


def write_flow_config(folder: Path, api_url: str, student: Path, *, n_seeds: int = 6, iterations: int = 2,
                      api_key_env: str | None = None, task_retries: int = 0, evaluation: dict | None = None,
                      roles: dict[str, dict] | None = None, training: dict | None = None) -> Path:
    """A tiny run: every API role on `api_url`, the tiny student, real DeepSpeed ZeRO-2 in one process.
    `roles` adds settings to some roles ({"teacher": {"mode": "batch"}}), `training` to the fine-tune."""
    folder.mkdir(parents=True, exist_ok=True)
    seeds = folder / "seeds.jsonl"
    lines = (REPO / "data" / "demo_seeds.jsonl").read_text().splitlines()[:n_seeds]
    seeds.write_text("".join(line + "\n" for line in lines))
    api = {"base_url": api_url, "model": "fake-model", "api_key_env": api_key_env,
           "sampling": {"temperature": 0.7, "max_tokens": 32},
           "rate_limits": {"requests_per_minute": 6000, "tokens_per_minute": 10_000_000, "max_concurrency": 4},
           "retry": {"max_attempts": 2, "initial_backoff_s": 0.05, "max_backoff_s": 0.1, "request_timeout_s": 10,
                     "outage_after": 1, "max_outage_s": 1}}
    data = {
        "teacher": api, "referee": {**api, "max_reasks": 1}, "generator": {**api, "sampling": {"temperature": 1.0}},
        "student": {"model": str(student), "prompt_format": "alpaca", "dtype": "float32",
                    "generation": {"do_sample": True, "temperature": 1.0, "max_new_tokens": 12, "batch_size": 8}},
        "training": {"learning_rate": 1e-3, "num_train_epochs": 1, "max_length": 128, "effective_batch_size": 4,
                     "per_device_batch_size": 2, "bf16": False, "gradient_checkpointing": False,
                     "deepspeed_config": str(REPO / "deployments" / "deepspeed" / "zero2.json"),
                     "launcher": "python", "num_gpus": 1, "timeout_s": 600},
        "loop": {"iterations": iterations, "new_instructions_per_iteration": 3, "random_seed": 7},
        "data": {"seed": str(seeds)},
        "storage": {"runs_root": str(folder / "runs"), "response_store": str(folder / "responses.sqlite")},
        "orchestration": {"shard_size": 4, "max_parallel_tasks": 2, "task_retries": task_retries, "retry_delay_s": 0,
                          "max_failed_fraction": 0.0},
    }
    if evaluation is not None:
        data["evaluation"] = {"reference": api, **evaluation}
    data["training"].update(training or {})
    for role, extra in (roles or {}).items():
        data[role] = {**data[role], **extra}
    path = folder / "lion.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture
def flow_config():
    return write_flow_config


def pool_rows(runs_root: Path, run_id: str, k: int, name: str) -> list[dict]:
    from lion_core.store import RunStore

    rows = RunStore(str(runs_root), run_id).table(k, name).to_pylist()
    return [{key: r[key] for key in ("id", "instruction", "input", "origin", "iteration", "parent_id")} for r in rows]


def load_json(path: Path) -> dict:
    return json.loads(path.read_text())


def _stored_answer_times(folder: Path) -> list[tuple[datetime, str]]:
    """When each API answer of the run in `folder` was stored, and its role (the student's own answers
    are not API answers)."""
    import sqlite3

    with sqlite3.connect(folder / "responses.sqlite") as db:
        return [(datetime.fromisoformat(t), role) for t, role in db.execute(
            "SELECT created_at, role FROM responses WHERE status = 'ok' AND role != 'student'")]


def _flow_run_start(name: str, since: datetime) -> datetime:
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName, FlowRunFilterStartTime

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            name=FlowRunFilterName(any_=[name]), start_time=FlowRunFilterStartTime(after_=since)))
    assert len(runs) == 1, runs
    return runs[0].start_time


@pytest.fixture(scope="session")
def uninterrupted(prefect_harness, tiny_model, tmp_path_factory):
    """Two iterations of a tiny run, uninterrupted, against an API that wants a key and answers 5% of
    requests 500 and 5% 429 (ridden out by retries): the reference that killed, resumed, batched and
    outage runs are compared with, and the run the tests of a finished run read. Read-only: a test that
    writes into it copies it first.

    A run of one iteration sends what this one sent before iteration 1's discrimination (its final
    fine-tune's Train Pool is this run's iteration 1's): `answered_one_iteration`; its pools are this
    run's at k=1 (ids are content hashes, the sampling seed comes from the config, and the server's
    replies and faults are fixed by the request). `referee_one_iteration`: the verdicts of iteration 0."""
    from flows.lion import lion
    from tests.fault_server import FaultPlan, FaultServer

    folder = tmp_path_factory.mktemp("uninterrupted")
    os.environ[KEY_ENV] = SECRET
    retry = {"max_attempts": 6, "initial_backoff_s": 0.05, "max_backoff_s": 0.1, "request_timeout_s": 10}
    try:
        started = datetime.now(timezone.utc)
        plan = FaultPlan(api_key=SECRET, rate_500=0.05, rate_429=0.05, retry_after_s=0.05, seed=3)
        with FaultServer(plan) as api:
            config = write_flow_config(folder, api.url, tiny_model, api_key_env=KEY_ENV, task_retries=3,
                                       roles={r: {"retry": retry} for r in ("teacher", "referee", "generator")})
            result = lion(config_path=str(config), run_id="ref")
            answered = sum(api.stats.answered.values())
            assert api.stats.outcomes["401"] == 0 and api.stats.outcomes["500"] > 0
            assert max(api.stats.answered.values()) == 1  # an uninterrupted run pays for every request once
        times = _stored_answer_times(folder)
        assert len(times) == answered  # each answer the server gave is one stored row: rows count requests
        boundary = _flow_run_start("iter-1-discrimination", started)
        one_iteration = sum(t < boundary for t, _ in times)
        referee_one_iteration = sum(t < boundary for t, role in times if role == "referee")
        assert 0 < one_iteration < answered and referee_one_iteration > 0
        yield {"folder": folder, "result": result, "answered": answered, "answered_one_iteration": one_iteration,
               "referee_one_iteration": referee_one_iteration}
    finally:
        os.environ.pop(KEY_ENV, None)
