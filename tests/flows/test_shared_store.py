"""A run that outlives its machine: its files in a bucket (a real S3 API on loopback), its response store on
PostgreSQL (a real server), its checkpoints on a file system both "machines" mount. The first machine is
killed with SIGKILL, every process of it at once, and its working directory, Prefect home and files are
deleted; a second process with another working directory and Prefect home resumes the run and pays for
nothing twice. Then a new run of the same identity is answered from the store alone."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import yaml

from lion_core.llm import ResponseStore
from tests.fault_server import FaultPlan, FaultServer
from tests.flows.conftest import write_flow_config
from tests.lion_cli.lion_script import LION

pytestmark = pytest.mark.slow
IN_FLIGHT = 8
"""At most this many requests on the wire when the machine dies (2 shards x 4 connections)."""


def _machine(root: Path, name: str, api_url: str, student: Path, shared: dict) -> tuple[Path, dict[str, str]]:
    """A machine's working directory with its own copy of the config and seeds, and its environment."""
    folder = root / name
    config = write_flow_config(folder, api_url, student, iterations=1)
    data = yaml.safe_load(config.read_text())
    data["storage"] = dict(shared["storage"])
    data["orchestration"]["result_storage"] = shared["result_storage"]
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(folder / "prefect-home"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PYTHONWARNINGS="ignore", HOME=str(folder / "home"), XDG_CACHE_HOME=str(folder / "cache"))
    return config, env


def _referee_answers(api: FaultServer) -> int:
    return sum(n for prompt, n in api.stats.successes.items() if "<<<ANSWER OF ASSISTANT 1>>>" in prompt)


def test_a_run_killed_on_one_machine_is_resumed_on_another_and_pays_nothing_twice(
        tiny_model, s3_bucket, postgres_url, tmp_path):
    prefix = f"{s3_bucket}/shared-{uuid.uuid4().hex[:8]}"
    shared_fs = tmp_path / "nfs"  # the mount both machines share, for the checkpoints
    shared = {"storage": {"runs_root": f"{prefix}/runs", "response_store": postgres_url,
                          "checkpoints_root": str(shared_fs / "checkpoints")},
              "result_storage": f"{prefix}/prefect-results"}
    with FaultServer(FaultPlan(latency_s=0.02)) as api:
        config_a, env_a = _machine(tmp_path, "machine-a", api.url, tiny_model, shared)
        first = subprocess.Popen([str(LION), "run", "--config", str(config_a), "--run-id", "moved"], env=env_a,
                                 cwd=config_a.parent, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                 start_new_session=True)
        deadline = time.monotonic() + 400
        while _referee_answers(api) < 3:  # well into iteration 0: teacher answered, student trained
            assert first.poll() is None, first.stdout.read()[-3000:]
            assert time.monotonic() < deadline, "the referee stage never started"
            time.sleep(0.05)
        os.killpg(first.pid, signal.SIGKILL)  # the machine dies: every process of it at once
        first.wait(timeout=30)
        before = sum(api.stats.answered.values())
        shutil.rmtree(config_a.parent)  # and its disk with it

        config_b, env_b = _machine(tmp_path, "machine-b", api.url, tiny_model, shared)
        resumed = subprocess.run([str(LION), "run", "--config", str(config_b), "--resume", "moved"], env=env_b,
                                 cwd=config_b.parent, capture_output=True, text=True, timeout=600)
        assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
        answered = dict(api.stats.answered)

        # the same run's identity under a new run id: every request is in the store
        fresh = subprocess.run([str(LION), "run", "--config", str(config_b), "--run-id", "fresh"], env=env_b,
                               cwd=config_b.parent, capture_output=True, text=True, timeout=600)
        assert fresh.returncode == 0, fresh.stdout[-3000:] + fresh.stderr[-3000:]
        assert dict(api.stats.answered) == answered  # not one request sent

    twice = [fp for fp, n in answered.items() if n > 1]
    assert before > 0 and sum(answered.values()) > before  # both machines asked
    assert max(answered.values()) <= 2 and len(twice) <= IN_FLIGHT, twice  # only what was on the wire at the kill
    with ResponseStore(postgres_url) as store:
        (stored,) = store._db.one("SELECT COUNT(*) FROM responses WHERE status = 'ok' AND endpoint = ?", (api.url,))
        assert stored == len(answered)  # every answer of the API stored, once (the student's are there too)
        assert store.claims() == {}  # nothing left claimed
    # the second machine kept nothing of the run on its disk: no store, no runs folder
    local = {p.relative_to(config_b.parent).parts[0] for p in config_b.parent.rglob("*") if p.is_file()}
    assert local <= {"lion.yaml", "seeds.jsonl", "prefect-home", "home", "cache"}, local
    assert not list(config_b.parent.rglob("*.sqlite"))
    assert (shared_fs / "checkpoints" / "moved" / "final").is_dir()
    assert (shared_fs / "checkpoints" / "fresh" / "final").is_dir()
