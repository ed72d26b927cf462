"""A run made by an older layout of the code resumes with this one: its Prefect task results (pickled
`PoolRef`s and typed results, found by cache key), its committed files and its response store are read
as they were, and nothing it paid for is paid again.

The run in `tests/data/compat/run-before-31.tar.gz` was made by `tests/data/compat/make_run.py` at the
commit before the issue-31 layout change (one package per stage, the config and command line split):
two iterations on the tiny loopback setup, stopped by an API outage in iteration 0's referee stage
after the fine-tune and the student's answers had finished.
"""

import json
import os
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.fault_server import FaultPlan, FaultServer
from tests.lion_cli.lion_script import LION

REPO = Path(__file__).resolve().parents[2]
ARCHIVE = REPO / "tests" / "data" / "compat" / "run-before-31.tar.gz"
FIXTURE = Path("/tmp/lion-compat-31")
"""Where the run was made: its identity holds the student's absolute path, so it is restored there."""
PORT = 18931
"""The API's port when the run was made: its stored answers are keyed by the base URL."""

pytestmark = pytest.mark.slow


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    return {**env, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PYTHONWARNINGS": "ignore"}


def test_a_run_made_before_the_layout_change_resumes_with_its_cache_and_pays_nothing_twice(tmp_path):
    shutil.rmtree(FIXTURE, ignore_errors=True)
    with tarfile.open(ARCHIVE) as tar:
        tar.extractall(FIXTURE.parent, filter="data")
    paid_before = set(json.loads((FIXTURE / "answered.json").read_text())["fingerprints"])
    checkpoint = FIXTURE / "runs" / "compat" / "checkpoints" / "iter-0" / "final" / "model.safetensors"
    trained_at = checkpoint.stat().st_mtime_ns
    config = FIXTURE / "lion.yaml"
    try:
        # What is left, planned from the run's files and its response store before anything is sent.
        r = subprocess.run([str(LION), "plan", str(config), "--resume", "compat", "--json", "--acceptance", "1"],
                           env=_env(tmp_path / "prefect"), capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        left = {(row["iteration"], row["role"]): row["requests"] for row in json.loads(r.stdout)["rows"]}
        assert left[("0", "teacher")] == 0  # committed
        assert 0 < left[("0", "referee")] < 2 * 6  # 6 items in both orders, some answered before the outage
        with FaultServer(FaultPlan(), port=PORT) as api:
            r = subprocess.run([str(LION), "run", "--config", str(config), "--resume", "compat"],
                               env=_env(tmp_path / "prefect"), capture_output=True, text=True, timeout=900)
            paid_now = set(api.stats.answered)
        log = r.stdout + r.stderr
        assert r.returncode == 0, log[-4000:]
        assert paid_now and not paid_now & paid_before, "a request the old run had paid for was sent again"
        # the plan is an upper bound of what the resume paid (the tiny student's pairs repeat across iterations)
        assert 0.5 * sum(left.values()) <= len(paid_now) <= sum(left.values()), (left, len(paid_now))
        # The old run's finished tasks come from its persisted results, not from running again.
        for name in ("teacher_answers_train-shard-00", "iter-0-merge-teacher_answers_train", "iter-0-training-set",
                     "iter-0-train-student", "iter-0-student_answers"):
            assert re.search(rf"Task run '{re.escape(name)}[^']*' - Finished in state Cached", log), name
        assert checkpoint.stat().st_mtime_ns == trained_at, "iteration 0's fine-tune ran again"
        summary = json.loads((FIXTURE / "runs" / "compat" / "iter-1" / "summary.json").read_text())
        assert summary["iteration"] == 1 and summary["judged"] > 0
        assert (FIXTURE / "runs" / "compat" / "checkpoints" / "final").exists()
    finally:
        shutil.rmtree(FIXTURE, ignore_errors=True)
