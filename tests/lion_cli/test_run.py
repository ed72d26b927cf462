"""`lion run` and `lion evaluate` (lion_cli.run): what they refuse before starting anything, and the
Prefect settings they start with."""

import os
import subprocess
import sys

import pytest

from tests.lion_cli.lion_script import REPO, lion


def test_run_and_evaluate_refuse_bad_requests_before_starting_anything(config, tmp_path):
    r = lion("run", "--config", config, "--resume", "no-such-run")
    assert r.returncode == 1 and "no run 'no-such-run'" in r.stderr
    assert lion("init", "--config", config, "--run-id", "taken", cwd=REPO).returncode == 0
    r = lion("run", "--config", config, "--run-id", "taken")
    assert r.returncode == 1 and "continue it with --resume taken" in r.stderr
    r = lion("evaluate", "--config", config, "--checkpoints", str(tmp_path / "missing"))
    assert r.returncode == 1 and "not a model folder" in r.stderr
    r = lion("evaluate", "--config", config, "--checkpoints", "run:nothing-here")
    assert r.returncode == 1 and "no finished checkpoint" in r.stderr


@pytest.mark.parametrize("given,expected", [(None, False), ("true", True)])
def test_prefect_analytics_are_off_unless_the_environment_turns_them_on(given, expected):
    """`lion` outside `make`: Prefect's analytics (calls to the internet) are off by default."""
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_SERVER_ANALYTICS_ENABLED"}
    env["PREFECT_API_URL"] = "http://127.0.0.1:9/api"  # named: no local API is started for this check
    if given is not None:
        env["PREFECT_SERVER_ANALYTICS_ENABLED"] = given
    code = ("from lion_prefect.local_api import prefect_setup; prefect_setup()\n"
            "from prefect.settings import get_current_settings\n"
            "print(get_current_settings().server.analytics_enabled)")
    r = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == str(expected)
