"""A real Prefect server and process worker: deploy from prefect.yaml, run lion-distill, it completes."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import warnings
from pathlib import Path

import pytest

from lion_core.llm.embedded import free_port
from lion_core.store import RunStore
from tests.fault_server import FaultServer
from tests.flows.conftest import REPO, write_flow_config

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


def _start(cmd, env, log):
    return subprocess.Popen(cmd, env=env, cwd=REPO, stdout=open(log, "wb"), stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)


def _stop(proc, signals=((signal.SIGTERM, 2), (signal.SIGINT, 15))):
    for sig, wait_s in signals:  # a worker needs both to stop
        if proc.poll() is not None:
            break
        os.killpg(proc.pid, sig)
        try:
            proc.wait(wait_s)
        except subprocess.TimeoutExpired:
            continue
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def _run_logs(api_url: str, level: int = 30) -> str:
    """What every flow run logged to the server at `level` or above: what a failed run in CI has to show."""
    query = {"logs": {"level": {"ge_": level}}, "sort": "TIMESTAMP_ASC", "limit": 200}
    req = urllib.request.Request(f"{api_url}/logs/filter", json.dumps(query).encode(),
                                 {"content-type": "application/json"})
    try:
        return "\n".join(f"{x['timestamp']} {x['name']}: {x['message']}" for x in json.loads(urllib.request.urlopen(req).read()))
    except OSError as e:
        return f"(could not read the run logs: {e})"


def _prefect(env, *args, timeout=120, log: Path | None = None):
    r = subprocess.run([str(BIN / "prefect"), *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0 and log is not None:
        tail = log.read_text(errors="replace")[-6000:] if log.exists() else "(none)"
        pytest.fail(f"prefect {' '.join(args)}:\n{r.stdout}\n{r.stderr}\n--- run logs ---\n"
                    f"{_run_logs(env['PREFECT_API_URL'])[-12000:]}\n--- {log.name} ---\n{tail}", pytrace=False)
    assert r.returncode == 0, f"prefect {' '.join(args)}:\n{r.stdout}\n{r.stderr}"
    return r.stdout


def test_deploy_and_run_lion_distill_on_a_process_worker(tmp_path, tiny_model):
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_API_URL": api_url,
           "PREFECT_UI_API_URL": api_url, "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "LION_PROJECT_DIR": str(REPO), "PYTHONWARNINGS": "ignore"}
    server = _start([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)], env,
                    tmp_path / "server.log")
    worker = None
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(f"{api_url}/health", timeout=2)
                break
            except OSError:
                assert time.monotonic() < deadline, (tmp_path / "server.log").read_text()[-3000:]
                time.sleep(0.5)
        _prefect(env, "work-pool", "create", "lion-gpu", "--type", "process",
                 "--base-job-template", str(REPO / "deployments" / "work-pools" / "process.json"))
        _prefect(env, "--no-prompt", "deploy", "--all")
        deployment = json.loads(urllib.request.urlopen(f"{api_url}/deployments/name/lion/lion-distill").read())
        assert deployment["concurrency_limit"] == 1 or deployment.get("global_concurrency_limit", {}).get("limit") == 1
        assert deployment["work_pool_name"] == "lion-gpu"
        # the worker looks for scheduled runs every second (default 10 s), so the run starts at once
        worker = _start([str(BIN / "prefect"), "worker", "start", "--pool", "lion-gpu"],
                        {**env, "PREFECT_WORKER_QUERY_SECONDS": "1"}, tmp_path / "worker.log")

        with FaultServer() as api:
            # Retries on, as in every shipped config: this test is about the deployment path, and a
            # transient fault a retry absorbs is reported below rather than failing it.
            config = write_flow_config(tmp_path / "run", api.url, tiny_model, iterations=1, task_retries=1)
            out = _prefect(env, "deployment", "run", "lion/lion-distill", "--param", f"config_path={config}",
                           "--param", "run_id=deployed", "--param", "export_dataset=true",
                           "--watch", "--watch-timeout", "600", timeout=660,
                           log=tmp_path / "worker.log")
        assert "Completed" in out, out + (tmp_path / "worker.log").read_text()[-5000:]
        if errors := _run_logs(api_url, level=40):
            warnings.warn(f"the deployed run completed after these errors:\n{errors[-6000:]}", stacklevel=1)
        store = RunStore(str(tmp_path / "run" / "runs"), "deployed")
        assert store.iterations() == [0, 1] and {"train_pool", "cache_pool"} <= set(store.manifest(1).files)
        # one deployment parameter, and the run ends by exporting what it distilled
        dataset = tmp_path / "run" / "runs" / "deployed" / "checkpoints" / "dataset"
        exported = json.loads((dataset / "lion_dataset.json").read_text())
        assert exported["rows"] == store.manifest(1).files["cache_pool"].rows
    finally:
        if worker is not None:
            _stop(worker)
        _stop(server, ((signal.SIGTERM, 15),))
