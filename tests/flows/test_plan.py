"""`lion plan` against a real run: a tiny run's projection against what that run then sent and spent; a finished run has
nothing left to plan; bad assumptions are refused."""

import json
import sqlite3

import yaml

from tests.lion_cli.lion_script import lion

PRICE = {"prompt_per_million": 1.0, "completion_per_million": 2.0}


def _priced_copy(config, tmp_path):
    """The run's config with a price on every role (an operations setting: the run's identity is the same)."""
    data = yaml.safe_load(config.read_text())
    for role in ("teacher", "referee", "generator"):
        data[role]["price"] = PRICE
    path = tmp_path / "priced.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _spent(folder):
    """Per API role: requests answered, and their cost at PRICE from the usage the server reported."""
    with sqlite3.connect(folder / "responses.sqlite") as db:
        rows = db.execute("SELECT role, COUNT(*), SUM(prompt_tokens), SUM(completion_tokens) FROM responses "
                          "WHERE status = 'ok' AND role != 'student' GROUP BY role").fetchall()
    return {role: {"requests": n, "cost_usd": (p * PRICE["prompt_per_million"] + c * PRICE["completion_per_million"]) / 1e6}
            for role, n, p, c in rows}


def test_the_plan_of_a_tiny_run_matches_what_it_then_sent_and_spent(uninterrupted, tmp_path):
    folder = uninterrupted["folder"]
    # The assumptions a user would give for this endpoint: its canned verdicts are about 25 tokens, and the
    # generator's tasks are all new (every draw kept).
    r = lion("plan", _priced_copy(folder / "lion.yaml", tmp_path), "--json", "--referee-reply-tokens", "25",
             "--acceptance", "1")
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout)
    spent, planned = _spent(folder), {role: v for role, v in plan["by_role"].items()}
    assert sum(s["requests"] for s in spent.values()) == uninterrupted["answered"]

    def per_request(figures):
        return figures["cost_usd"] / figures["requests"]

    # The teacher answers every instruction once: 6 seeds, 3 new in each of 2 iterations, the last 3 once more.
    assert planned["teacher"]["requests"] == spent["teacher"]["requests"] == 12
    # The generator draws until 3 are kept per iteration: with every draw kept, 3 per iteration.
    assert planned["generator"]["requests"] == spent["generator"]["requests"] == 6
    # The referee: the plan asks every Cache Pool item in both orders (6, then 9 items) plus 2% re-asks, an
    # upper bound: pairs asked in an earlier iteration come from the response store, and an empty student
    # answer needs no verdict; the tiny random student's answers repeat and are often empty.
    assert planned["referee"]["requests"] == round(12 * 1.02) + round(18 * 1.02) == 30
    assert 0.5 * planned["referee"]["requests"] <= spent["referee"]["requests"] <= planned["referee"]["requests"]
    # Tokens (estimated at 4 characters a token; the server counts the same way) and so dollars: within 25%
    # a request for every role, the replies' lengths being the plan's assumptions or the seeds' own answers.
    for role in ("teacher", "referee", "generator"):
        assert abs(per_request(planned[role]) - per_request(spent[role])) <= 0.25 * per_request(spent[role]), (
            role, planned[role], spent[role])
    assert plan["token_counting"].startswith("estimated")


def test_a_finished_run_has_nothing_left_to_plan(uninterrupted, tmp_path):
    r = lion("plan", _priced_copy(uninterrupted["folder"] / "lion.yaml", tmp_path), "--resume", "ref", "--json")
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout)
    assert plan["requests"] == 0 and plan["cost_usd"] == 0 and plan["resumed_from"] == "ref"


def test_bad_assumptions_and_a_missing_run_are_refused(uninterrupted, tmp_path):
    config = _priced_copy(uninterrupted["folder"] / "lion.yaml", tmp_path)
    r = lion("plan", config, "--acceptance", "0")
    assert r.returncode != 0 and "acceptance" in r.stderr
    r = lion("plan", config, "--resume", "no-such-run")
    assert r.returncode != 0 and "no run 'no-such-run'" in r.stderr
