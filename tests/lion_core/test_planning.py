"""The plan's schedule, prices and times, from the config and the seeds' own text."""

import json

import pytest
from pydantic import ValidationError

from lion_core.config import parse_config
from lion_core.planning import Assumptions, make_plan, schedule
from lion_core.pools import make_row

PRICE = {"prompt_per_million": 0.5, "completion_per_million": 1.5}


def _seeds(n):
    return [make_row(f"Describe the history of town number {i} in three sentences.", origin="seed", iteration=0,
                     metadata={"output": "It was founded long ago. " * 8}) for i in range(n)]


def _config(**loop):
    role = {"base_url": "https://api.example.com/v1", "model": "m", "price": PRICE,
            "rate_limits": {"requests_per_minute": 600, "tokens_per_minute": 60_000}}
    return parse_config({"teacher": role, "referee": role, "generator": role,
                         "loop": {"iterations": 3, "new_instructions_per_iteration": 6, **loop}})


def test_the_schedule_is_the_loops():
    rows = {(it, role): n for it, _, role, n in schedule(_config(), 52, Assumptions(acceptance=0.5, reask_rate=0.0))}
    assert [rows[(k, "teacher")] for k in ("0", "1", "2", "final")] == [52, 6, 6, 6]  # each instruction once
    assert [rows[(k, "referee")] for k in ("0", "1", "2")] == [2 * 52, 2 * 58, 2 * 64]  # both orders, Cache Pool grows
    assert [rows[(k, "generator")] for k in ("0", "1", "2")] == [12, 12, 12]  # 6 kept of 12 draws


def test_the_one_shot_baseline_plans_the_same_instructions_without_a_referee():
    a = Assumptions(acceptance=0.5, reask_rate=0.0)
    loop = schedule(_config(), 52, a)
    one = schedule(_config(selection="one_shot"), 52, a)
    assert [(it, role, n) for it, _, role, n in one] == [("0", "generator", 12), ("1", "generator", 12),
                                                          ("2", "generator", 12), ("final", "teacher", 52 + 3 * 6)]
    teacher = sum(n for _, _, role, n in loop if role == "teacher")
    assert teacher == 52 + 3 * 6  # the loop asks the teacher for the same instructions, over its iterations


def test_dollars_and_hours_follow_the_tokens_the_prices_and_the_limits():
    plan = make_plan(_config(), _seeds(40), Assumptions(referee_reply_tokens=100))
    for r in plan.rows:
        assert r.cost_usd == pytest.approx((r.prompt_tokens * 0.5 + r.completion_tokens * 1.5) / 1e6, rel=1e-3, abs=1e-6)
        assert r.batch_cost_usd == pytest.approx(r.cost_usd / 2, rel=1e-3, abs=1e-6)  # the default batch price: half
        assert r.minutes == pytest.approx(max(r.requests / 600, (r.prompt_tokens + r.completion_tokens) / 60_000), abs=0.01)
    teacher = next(r for r in plan.rows if r.iteration == "0" and r.role == "teacher")
    # the teacher's replies are taken as long as the seeds' own answers (8 x 25 characters, 4 a token)
    assert teacher.completion_tokens == 40 * (len("It was founded long ago. " * 8) // 4 + 1)
    assert plan.requests == sum(r.requests for r in plan.rows) and plan.seeds == 40
    assert json.loads(plan.model_dump_json())["token_counting"].startswith("estimated")


def test_a_role_in_batch_mode_takes_no_time_at_the_per_minute_limits():
    batch = parse_config({**_config().to_json_dict(), "referee": {**_config().referee.model_dump(mode="json"),
                                                                  "mode": "batch"}})
    plan = make_plan(batch, _seeds(10))
    assert all(r.minutes == 0 for r in plan.rows if r.role == "referee")
    assert any(r.minutes > 0 for r in plan.rows if r.role == "teacher")


def test_assumptions_out_of_range_are_refused():
    with pytest.raises(ValidationError, match="acceptance"):
        Assumptions(acceptance=0)
    with pytest.raises(ValidationError, match="reask_rate"):
        Assumptions(reask_rate=-1)
