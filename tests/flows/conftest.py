import json
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


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
           "retry": {"max_attempts": 2, "initial_backoff_s": 0.05, "max_backoff_s": 0.1, "request_timeout_s": 10}}
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
    from lion_core.store import RunStore, read_table

    rows = read_table(RunStore(str(runs_root), run_id).ref(k, name)).to_pylist()
    return [{key: r[key] for key in ("id", "instruction", "input", "origin", "iteration", "parent_id")} for r in rows]


def load_json(path: Path) -> dict:
    return json.loads(path.read_text())
