"""The loop against its control on the tiny loopback setup: a Lion run and a `loop.selection: random` run of
the same config cost the same API calls; `lion compare` judges both final students on one yardstick,
reuses what the runs' own evaluations paid for, and refuses runs evaluated differently."""

from __future__ import annotations

import json

import pytest
import yaml

from flows.compare import compare
from flows.lion import lion
from lion_core.compare import Incomparable
from lion_core.llm import ResponseStore
from lion_core.store import RunStore
from tests.fault_server import FaultPlan, FaultServer
from tests.flows.conftest import write_flow_config

pytestmark = pytest.mark.slow


def _with(config, run_folder, **loop):
    data = yaml.safe_load(config.read_text())
    data["loop"].update(loop)
    path = run_folder / f"{'-'.join(f'{k}-{v}' for k, v in loop.items()) or 'lion'}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_adversarial_and_random_selection_cost_the_same_and_compare_on_one_yardstick(prefect_harness, tiny_model,
                                                                                    tmp_path):
    questions = tmp_path / "questions.jsonl"
    questions.write_text("".join(json.dumps({"question_id": i, "text": t, "category": "c"}) + "\n" for i, t in
                                 enumerate(["Why is ice slippery?", "Name a prime.", "Say hello.", "Count to three."])))
    with FaultServer(FaultPlan()) as api:
        base = write_flow_config(tmp_path, api.url, tiny_model, iterations=1, n_seeds=8,
                                 evaluation={"eval_set": str(questions), "min_coverage": 0.5})
        adversarial, random_ = _with(base, tmp_path, selection="adversarial"), _with(base, tmp_path, selection="random")
        lion(config_path=str(adversarial), run_id="lion")
        lion(config_path=str(random_), run_id="control")
        with ResponseStore(str(tmp_path / "responses.sqlite")) as store:
            paid = {r: store.paid_calls(r) for r in ("lion", "control")}
        result = compare(config_path=str(adversarial), run_ids=["lion", "control"], name="cmp")
        before = sum(api.stats.answered.values())
        again = compare(config_path=str(adversarial), run_ids=["lion", "control"], name="cmp-again")
        asked_again = sum(api.stats.answered.values()) - before

    # the control asked the referee as much as the loop did, and the generator for as many new instructions
    # (the control shares the store with the loop: it paid only for what the loop had not asked)
    asked = {r["run"]: r["api_requests_by_role"] for r in result.runs}
    for role in ("teacher", "referee", "generator"):
        a, c = asked["lion"].get(role, 0), asked["control"].get(role, 0)
        assert a > 0 and abs(a - c) <= max(1, 0.2 * a), (role, asked)
    control = RunStore(str(tmp_path / "runs"), "control")
    assert control.table(0, "judgments").num_rows > 0  # the referee's verdicts are kept, not used
    assert [r["run"] for r in result.runs] == ["lion", "control"]
    assert [r["selection"] for r in result.runs] == ["adversarial", "random"]
    for r in result.runs:
        assert r["relative_score"] is not None and r["paid_calls"] == sum(paid[r["run"]].values())
        lo, hi = r["relative_score_ci95"]
        assert lo <= r["relative_score"] <= hi and r["training_s"] > 0
    (pair,) = result.pairs
    assert (pair["a"], pair["b"], pair["questions"]) == ("lion", "control", 4)
    lo, hi = pair["ci95"]
    assert lo <= pair["difference"] <= hi
    assert pair["difference"] == pytest.approx(result.runs[0]["relative_score"] - result.runs[1]["relative_score"])
    # a second comparison reuses every answer and verdict the first paid for
    assert asked_again == 0 and again.runs == result.runs and again.pairs == result.pairs

    other = tmp_path / "other-questions.jsonl"
    other.write_text(questions.read_text().replace("Say hello.", "Say goodbye."))
    data = yaml.safe_load(random_.read_text())
    data["evaluation"]["eval_set"] = str(other)
    elsewhere = tmp_path / "elsewhere.yaml"
    elsewhere.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(Incomparable, match=r"evaluation.eval_set: --config: \S*other-questions.jsonl \(sha256:\w+\); "
                                           r"lion: \S*questions.jsonl \(sha256:\w+\); control"):
        compare(config_path=str(elsewhere), run_ids=["lion", "control"], name="refused")
    assert not RunStore(str(tmp_path / "runs" / "evaluations"), "refused").exists()  # refused before anything
