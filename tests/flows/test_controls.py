"""The loop against its controls on the tiny loopback setup: a Lion run and a `loop.selection: random` run of
the same config cost the same API calls; the one-shot baseline distils as many instructions without a
referee, in one fine-tune of the loop's steps; `lion compare` judges the final students on one yardstick,
reuses what the runs' own evaluations paid for, and refuses runs evaluated differently."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from flows.compare import compare
from flows.lion import lion
from lion_cli.main import app
from lion_core.compare import Incomparable
from lion_core.config import load_config
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


def _steps(config: Path, run: str, k: int) -> int:
    folder = Path(load_config(config).storage.checkpoint_dir(run, k))
    return json.loads((folder / "final" / "lion_checkpoint.json").read_text())["global_step"]


def test_adversarial_random_and_one_shot_compare_on_one_yardstick(prefect_harness, tiny_model, tmp_path):
    questions = tmp_path / "questions.jsonl"
    questions.write_text("".join(json.dumps({"question_id": i, "text": t, "category": "c"}) + "\n" for i, t in
                                 enumerate(["Why is ice slippery?", "Name a prime.", "Say hello.", "Count to three."])))
    with FaultServer(FaultPlan()) as api:
        # 9 seeds and 3 new: the loop's two fine-tunes round up to 3 + 1 steps, where 12 examples at once make 3
        base = write_flow_config(tmp_path, api.url, tiny_model, iterations=1, n_seeds=9,
                                 evaluation={"eval_set": str(questions), "min_coverage": 0.5})
        adversarial, random_ = _with(base, tmp_path, selection="adversarial"), _with(base, tmp_path, selection="random")
        lion(config_path=str(adversarial), run_id="lion")
        lion(config_path=str(random_), run_id="control")
        lion(config_path=str(_with(base, tmp_path, selection="one_shot")), run_id="oneshot")
        runs = ["lion", "control", "oneshot"]
        with ResponseStore(str(tmp_path / "responses.sqlite")) as store:
            paid = {r: store.paid_calls(r) for r in runs}
        result = compare(config_path=str(adversarial), run_ids=runs, name="cmp")
        before = sum(api.stats.answered.values())
        again = compare(config_path=str(adversarial), run_ids=runs, name="cmp-again")
        asked_again = sum(api.stats.answered.values()) - before

    # the control asked the referee as much as the loop did, and the generator for as many new instructions
    # (the control shares the store with the loop: it paid only for what the loop had not asked)
    asked = {r["run"]: r["api_requests_by_role"] for r in result.runs}
    for role in ("teacher", "referee", "generator"):
        a, c = asked["lion"].get(role, 0), asked["control"].get(role, 0)
        assert a > 0 and abs(a - c) <= max(1, 0.2 * a), (role, asked)
    control = RunStore(str(tmp_path / "runs"), "control")
    assert control.table(0, "judgments").num_rows > 0  # the referee's verdicts are kept, not used
    assert [r["run"] for r in result.runs] == runs
    assert [r["selection"] for r in result.runs] == ["adversarial", "random", "one_shot"]

    # the one-shot: as many distinct instructions as the loop, answered by the teacher, no referee, one fine-tune
    loop, one = RunStore(str(tmp_path / "runs"), "lion"), RunStore(str(tmp_path / "runs"), "oneshot")
    distilled = one.table(1, "teacher_answers_train")
    assert distilled.num_rows == one.ref(1, "cache_pool").rows == loop.ref(1, "cache_pool").rows == 12
    assert len(set(distilled.column("id").to_pylist())) == 12
    assert asked["oneshot"].get("referee", 0) == 0 and paid["oneshot"].get("referee", 0) == 0
    assert asked["oneshot"]["generator"] > 0 and asked["oneshot"]["teacher"] == 12
    assert not one.manifest(0) or "judgments" not in one.manifest(0).files
    assert not Path(load_config(adversarial).storage.checkpoint_dir("oneshot", 0)).exists()  # one fine-tune
    for run, k in (("lion", 0), ("lion", 1), ("oneshot", 1)):  # resume points are dropped once a model is complete
        folder = Path(load_config(adversarial).storage.checkpoint_dir(run, k))
        assert (folder / "final").is_dir() and not (folder / "trainer").exists()
    assert _steps(adversarial, "oneshot", 1) == _steps(adversarial, "lion", 0) + _steps(adversarial, "lion", 1) == 4
    # what `lion status` and `lion report` say of it: one generation round, the teacher on everything, one fine-tune
    status = json.loads(CliRunner().invoke(app, ["status", "oneshot", "--runs-root", str(tmp_path / "runs"),
                                                 "--json"]).output)
    assert status["state"] == "finished" and status["selection"] == "one_shot"
    assert [(s["iteration"], s["stage"], s["state"], s["done"]) for s in status["stages"]] == [
        ("0", "generation", "done", one.ref(0, "candidates").rows),
        ("final", "teacher answers, every instruction", "done", 12), ("final", "fine-tune", "done", 4)]
    assert status["usage"]["generator"]["requests"] == asked["oneshot"]["generator"]
    page = tmp_path / "oneshot.html"
    assert CliRunner().invoke(app, ["report", "oneshot", "--runs-root", str(tmp_path / "runs"),
                                    "--out", str(page)]).exit_code == 0
    assert "One-shot baseline" in page.read_text() and "trained once, from the base model" in page.read_text()
    for r in result.runs:
        assert r["relative_score"] is not None and r["paid_calls"] == sum(paid[r["run"]].values())
        lo, hi = r["relative_score_ci95"]
        assert lo <= r["relative_score"] <= hi and r["training_s"] > 0
    assert [(p["a"], p["b"], p["questions"]) for p in result.pairs] == [
        ("lion", "control", 4), ("lion", "oneshot", 4), ("control", "oneshot", 4)]
    score = {r["run"]: r["relative_score"] for r in result.runs}
    for pair in result.pairs:
        lo, hi = pair["ci95"]
        assert lo <= pair["difference"] <= hi
        assert pair["difference"] == pytest.approx(score[pair["a"]] - score[pair["b"]])
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
