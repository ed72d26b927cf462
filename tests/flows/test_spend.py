"""What a run spends, end to end: a budget cap stops `lion run` cleanly with its own exit code and a raised
cap finishes the run paying what an uncapped run pays; an item whose reply is always empty is paid for
at most its budget of unusable replies and the run completes without it."""

import json
import os
import sqlite3
import subprocess
from pathlib import Path

import yaml

from lion_core.prompts import teacher_messages
from tests.fault_server import FaultPlan, FaultServer
from tests.flows.conftest import KEY_ENV, SECRET, pool_rows, write_flow_config
from tests.lion_cli.lion_script import LION

REPO = Path(__file__).resolve().parents[2]
PRICE = {"prompt_per_million": 100.0, "completion_per_million": 200.0}
# as the session's uninterrupted run (tests/flows/conftest.py), so the pools can be compared with its own
PLAN = FaultPlan(api_key=SECRET, rate_500=0.05, rate_429=0.05, retry_after_s=0.05, seed=3)
RETRY = {"max_attempts": 6, "initial_backoff_s": 0.05, "max_backoff_s": 0.1, "request_timeout_s": 10}


def _cost(store: Path) -> float:
    """What the API answers stored in `store` cost at PRICE (the student's own answers are free)."""
    with sqlite3.connect(store) as db:
        p, c = db.execute("SELECT SUM(prompt_tokens), SUM(completion_tokens) FROM responses "
                          "WHERE status = 'ok' AND role != 'student'").fetchone()
    return (p * PRICE["prompt_per_million"] + c * PRICE["completion_per_million"]) / 1e6


def _set(config: Path, update) -> None:
    data = yaml.safe_load(config.read_text())
    update(data)
    config.write_text(yaml.safe_dump(data, sort_keys=False))


def _lion_run(config: Path, home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false", PYTHONWARNINGS="ignore",
               **{KEY_ENV: SECRET})
    return subprocess.run([str(LION), "run", "--config", str(config), *args], env=env, capture_output=True, text=True,
                          timeout=900)


def test_a_run_capped_at_half_its_cost_stops_and_a_raised_cap_finishes_it_paying_once(uninterrupted, tiny_model,
                                                                                      tmp_path):
    full = _cost(uninterrupted["folder"] / "responses.sqlite")
    folder = tmp_path / "capped"
    with FaultServer(PLAN) as api:
        config = write_flow_config(folder, api.url, tiny_model, api_key_env=KEY_ENV, task_retries=3,
                                   roles={r: {"retry": RETRY, "price": PRICE} for r in ("teacher", "referee", "generator")})
        _set(config, lambda d: d.update(budget={"max_cost_usd": round(full / 2, 6)}))
        capped = _lion_run(config, tmp_path / "home", "--run-id", "ref")
        assert capped.returncode == 3, capped.stderr[-3000:]
        message = capped.stderr.strip().splitlines()[-1]
        assert message.startswith("lion: error: budget.max_cost_usd") and "run ref has spent $" in message
        assert "--resume ref" in message
        with sqlite3.connect(folder / "responses.sqlite") as db:
            spent = db.execute("SELECT SUM(cost_usd) FROM spend WHERE run = 'ref'").fetchone()[0]
            failed = db.execute("SELECT COUNT(*) FROM responses WHERE status = 'failed'").fetchone()[0]
        assert 0 < spent <= full / 2 and failed == 0  # within the cap; what was not sent is not a failure
        first = sum(api.stats.answered.values())
        assert 0 < first < uninterrupted["answered"]

        _set(config, lambda d: d.update(budget={"max_cost_usd": round(full * 2, 6)}))  # an operation: same run
        resumed = _lion_run(config, tmp_path / "home", "--resume", "ref")
        assert resumed.returncode == 0, resumed.stderr[-3000:]
    # paid in total what the uncapped run paid, each request once, and the same pools
    assert sum(api.stats.answered.values()) == uninterrupted["answered"]
    assert max(api.stats.answered.values()) == 1
    with sqlite3.connect(folder / "responses.sqlite") as db:
        spent = db.execute("SELECT SUM(cost_usd) FROM spend WHERE run = 'ref'").fetchone()[0]
    assert abs(spent - full) <= 1e-6 * full + 1e-9
    for k in (1, 2):
        for name in ("train_pool", "cache_pool"):
            assert pool_rows(folder / "runs", "ref", k, name) == pool_rows(uninterrupted["folder"] / "runs", "ref", k,
                                                                           name), (k, name)


def test_an_item_always_answered_empty_is_paid_at_most_its_budget_and_the_run_goes_on(prefect_harness, tiny_model,
                                                                                   tmp_path):
    from flows.lion import lion

    seed = json.loads((REPO / "data" / "demo_seeds.jsonl").read_text().splitlines()[0])
    prompt = teacher_messages(seed["instruction"], seed["input"])[-1][1]
    with FaultServer(FaultPlan(empty_for=(prompt,))) as api:
        config = write_flow_config(tmp_path, api.url, tiny_model, iterations=1, task_retries=2,
                                   roles={r: {"retry": {**RETRY, "max_unusable_replies": 2}}
                                          for r in ("teacher", "referee", "generator")})
        # one of 6 seeds without an answer: a sixth of the stage, within its threshold; today's shards of 4
        # would each have judged it alone (one of 4, or of 2)
        _set(config, lambda d: d["orchestration"].update(max_failed_fraction=0.2))
        first = lion(config_path=str(config), run_id="empty")
        assert [s.iteration for s in first.iterations] == [0]
        assert api.stats.empty_replies[prompt] == 2  # its two unusable replies, not max_attempts (6)
        # a resume that runs another iteration asks for the item again (its Cache Pool keeps it): not sent
        second = lion(config_path=str(config), run_id="empty", iterations=2)
        assert [s.iteration for s in second.iterations] == [0, 1]
        assert api.stats.empty_replies[prompt] == 2
        # --retry-failed: a fresh budget, once, for the stages that run (iteration 2's Cache Pool keeps it)
        third = lion(config_path=str(config), run_id="empty", iterations=3, retry_failed=True)
        assert [s.iteration for s in third.iterations] == [0, 1, 2]
    assert api.stats.empty_replies[prompt] == 4
    with sqlite3.connect(tmp_path / "responses.sqlite") as db:
        rows = db.execute("SELECT status, error_class, unusable FROM responses WHERE status = 'failed'").fetchall()
    assert rows == [("failed", "UnusableReply", 2)]  # its second budget spent too
    from lion_core.store import RunStore

    answers = RunStore(str(tmp_path / "runs"), "empty").table(0, "teacher_answers_train").to_pylist()
    [failed] = [a for a in answers if a["status"] != "ok"]
    assert failed["instruction"] == seed["instruction"] and failed["answer"] is None
    assert failed["error"].startswith("UnusableReply: empty completion")
