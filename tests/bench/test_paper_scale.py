"""bench/paper_scale.py on a few hundred Alpaca seeds: the same harness as the paper-scale figures.

`make test` runs it uninterrupted and checks every figure the issue asks for. `make chaos` also kills
the same run with SIGKILL halfway through iteration 1's referee stage and resumes it against that
uninterrupted run (`--reference`): the pools come out identical, nothing answered before the kill is
paid again beyond what was in flight, and the resume asks its first request without waiting out the
killed attempt's slot leases. (`make test` kills a run in iteration 1's referee stage too, through the
CLI: tests/flows/test_chaos.py.)"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# 2 connections and 50 ms a request: iteration 1's referee stage lasts a few seconds, long enough to be
# killed halfway through. One slot per key: the killed shard's slot is the only one, so the resume asks
# within 40 s only if it gives that slot back itself (its lease would hold it 45-75 s)
SETTINGS = ["--seeds", "160", "--iterations", "2", "--new", "40", "--train-steps", "1", "--bare-requests", "300",
            "--concurrency", "2", "--latency-s", "0.05", "--shards-in-flight", "1"]


def _bench(alpaca: Path, *args: str) -> dict:
    out = subprocess.run([sys.executable, str(REPO / "bench" / "paper_scale.py"), "--alpaca", str(alpaca), *SETTINGS,
                          *args, "--json"], capture_output=True, text=True, cwd=REPO, timeout=840)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def uninterrupted_bench(shared_data, tmp_path_factory):
    alpaca = shared_data / "stanford_alpaca" / "alpaca_data_52k_en_via_open-chinese.parquet"
    work = tmp_path_factory.mktemp("paper-scale")
    figures = _bench(alpaca, "--workdir", str(work / "uninterrupted"))
    (work / "uninterrupted.json").write_text(json.dumps(figures))
    return {"alpaca": alpaca, "work": work, "figures": figures}


@pytest.mark.slow
def test_a_small_paper_scale_run_gives_every_figure(uninterrupted_bench):
    figures = uninterrupted_bench["figures"]
    assert figures["pools"] == [160, 200, 240]  # seeds, then 40 new instructions per iteration
    assert figures["run"]["rc"] == 0 and figures["wall_seconds"] > 0
    per_iteration = figures["referee_by_iteration"]
    assert len(per_iteration) == 2 and all(n > 0 for n in per_iteration)
    assert figures["bare_client"]["per_second"] > 0 and figures["gateway_fraction_of_bare"] > 0
    assert figures["gateway"]["referee/discrimination"]["answers"] == sum(per_iteration)
    assert figures["prefect"]["flow_runs"] > 0 and figures["prefect"]["task_runs"] > 0
    assert {"iter-0-imitation", "iter-1-discrimination", "iter-1-generation"} <= set(figures["prefect"]["stages"])
    assert [it["accepted"] for it in figures["iterations"]] == [40, 40]
    assert all(it["rouge_filter_seconds"] >= 0 for it in figures["iterations"])
    assert figures["peak_rss_gb"] > 0 and figures["response_store_mb"] > 0 and figures["run_folder_mb"] > 0
    # every request the server answered is stored once: an uninterrupted run pays for nothing twice
    api_answers = {role: n for role, n in figures["stored_answers"].items() if role != "student"}
    assert figures["answered_by_server"] == api_answers
    assert figures["server"]["outcomes"].get("500", 0) > 0  # faults were injected and ridden out


@pytest.mark.chaos
def test_a_small_paper_scale_run_killed_in_the_referee_stage_resumes_to_the_same_pools(uninterrupted_bench):
    reference = uninterrupted_bench["work"] / "uninterrupted.json"
    figures = _bench(uninterrupted_bench["alpaca"], "--kill-at", "referee", "--reference", str(reference),
                     "--workdir", str(uninterrupted_bench["work"] / "killed"))
    assert figures["pools"] == [160, 200, 240]
    assert figures["pools_identical"] is True
    # killed after iteration 0's verdicts and half of iteration 1's
    per_iteration = uninterrupted_bench["figures"]["referee_by_iteration"]
    assert figures["killed"]["rc"] == -9 and figures["killed"]["killed_at_referee"] >= per_iteration[0] + per_iteration[1] // 2
    # every request paid again was in flight: answered by the server, never stored by the killed run
    assert figures["paid_twice_beyond_in_flight"] == 0 and figures["paid_twice"] <= figures["killed"]["in_flight_at_kill"]
    assert figures["resume_first_request_s"] is not None and figures["resume_first_request_s"] < 40
    assert [it["accepted"] for it in figures["iterations"]] == [40, 40]
