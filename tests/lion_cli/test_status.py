"""`lion status RUN`: a real `lion run` on the tiny loopback setup, looked at from outside while it goes on
(no Prefect server asked: the run's files and response store only), then once it has finished."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest
from typer.testing import CliRunner

from lion_cli.main import app
from tests.fault_server import FaultPlan, FaultServer
from tests.flows.conftest import write_flow_config
from tests.lion_cli.lion_script import LION

pytestmark = pytest.mark.slow
PRICE = {"prompt_per_million": 1.0, "completion_per_million": 2.0}
API_STAGES = {"teacher answers, Train Pool", "teacher answers, Cache Pool", "referee verdicts"}


def _status(root, run, *extra):
    out = CliRunner().invoke(app, ["status", run, "--runs-root", str(root), *extra])
    assert out.exit_code == 0, out.output
    return out.output


def test_status_follows_a_run_in_progress_and_shows_the_finished_one(tiny_model, tmp_path):
    with FaultServer(FaultPlan(latency_s=0.4)) as api:
        config = write_flow_config(tmp_path, api.url, tiny_model, iterations=1, n_seeds=8,
                                   roles={r: {"price": PRICE} for r in ("teacher", "referee", "generator")})
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env.update(PREFECT_HOME=str(tmp_path / "prefect-home"), PYTHONWARNINGS="ignore")
        run = subprocess.Popen([str(LION), "run", "--config", str(config), "--run-id", "watched"], env=env,
                               cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        seen, partial, deadline = [], [], time.monotonic() + 500
        while run.poll() is None and time.monotonic() < deadline:
            if (tmp_path / "runs" / "watched" / "run.json").exists():
                s = json.loads(_status(tmp_path / "runs", "watched", "--json"))
                seen.append(s)
                cur = s["current"]
                if cur and cur["stage"] in API_STAGES and cur["total"] and 0 < (cur["done"] or 0) < cur["total"]:
                    partial.append(s)
            time.sleep(0.1)
        output = run.communicate(timeout=60)[0]
        assert run.returncode == 0, output[-3000:]

    running = [s for s in seen if s["state"] == "running" and s["current"]]
    assert running and all("pid" in s["holder"] for s in running)  # the live process, named by its lock
    stages = {s["current"]["stage"] for s in running}
    assert {"fine-tune", "referee verdicts", "generation"} & stages, stages
    # an API stage caught part way: its items counted in the response store, growing, never past the total
    assert partial, [s["current"] for s in running]
    for a, b in zip(partial, partial[1:]):
        if a["current"]["stage"] == b["current"]["stage"] and a["current"]["iteration"] == b["current"]["iteration"]:
            assert a["current"]["done"] <= b["current"]["done"] <= b["current"]["total"]
    assert any(s["spend"].get("teacher", {}).get("paid_calls", 0) > 0 for s in running)  # paid so far, live
    assert any(s["estimate_left_s"] is not None for s in running if s["current"]["iteration"] != "0")

    final = json.loads(_status(tmp_path / "runs", "watched", "--json"))
    assert final["state"] == "finished" and final["holder"] is None and final["current"] is None
    assert [s["state"] for s in final["stages"]] == ["done"] * 8
    assert [(s["iteration"], s["stage"]) for s in final["stages"]][-2:] == [("final", "teacher answers, Train Pool"),
                                                                           ("final", "fine-tune")]
    first = final["stages"][0]
    assert (first["done"], first["unit"]) == (8, "answers") and first["seconds"] >= 0
    assert final["stages"][1]["unit"] == "steps" and final["stages"][1]["done"] == 2  # 8 examples, 4 per step
    for role in ("teacher", "referee", "generator"):
        assert final["spend"][role]["paid_calls"] > 0 and final["spend"][role]["cost_usd"] > 0
        assert final["usage"][role]["requests"] >= final["spend"][role]["paid_calls"] > 0
    assert final["latest_checkpoint"].endswith("final") and final["estimate_left_s"] is None

    text = _status(tmp_path / "runs", "watched")
    assert "finished: the final checkpoint is published" in text and "referee verdicts" in text
    assert "teacher" in text and "latest checkpoint:" in text


def test_status_of_a_run_that_is_not_there_names_it(tmp_path):
    out = subprocess.run([str(LION), "status", "nowhere", "--runs-root", str(tmp_path)], capture_output=True, text=True)
    assert out.returncode == 1 and "no run 'nowhere' under" in out.stderr and not list(tmp_path.iterdir())
