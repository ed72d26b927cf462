"""Evaluation end to end: two checkpoints, a handful of questions, the embedded endpoint as reference
model and judge, under a Prefect test API."""

import json

import pyarrow.parquet as pq
import pytest
import yaml
from prefect import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

from flows.evaluate import evaluate
from lion_core.config import load_config
from lion_core.llm.responses import ResponseStore
from tests.flows.conftest import REPO

pytestmark = pytest.mark.slow

QUESTIONS = [
    {"question_id": 1, "text": "How can I improve my time management skills?", "category": "generic"},
    {"question_id": 2, "text": "What causes the seasons on Earth?", "category": "knowledge"},
    {"question_id": 3, "text": "Write a two-line poem about autumn.", "category": "writing"},
]


def test_two_checkpoints_judged_in_both_orders_against_the_embedded_endpoint(prefect_harness, tiny_model, tmp_path,
                                                                            active_embedded):
    data = load_config(REPO / "configs" / "embedded.yaml").to_json_dict()
    data["storage"] = {"runs_root": str(tmp_path / "runs"), "response_store": str(tmp_path / "responses.sqlite")}
    data["student"]["generation"].update(max_new_tokens=16, do_sample=False)
    data["evaluation"].update(min_coverage=0.0)
    data["evaluation"]["reference"]["sampling"]["max_tokens"] = 32
    data["training"]["deepspeed_config"] = str(REPO / data["training"]["deepspeed_config"])
    config = tmp_path / "eval.yaml"
    config.write_text(yaml.safe_dump(data))
    questions = tmp_path / "questions.jsonl"
    questions.write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS))

    result = evaluate(config_path=str(config), checkpoints=["base", str(tiny_model)], eval_set=str(questions),
                      name="two")

    assert list(result.scores) == ["base", tiny_model.name]
    rows = pq.read_table(result.files["results"]).to_pylist()
    assert len(rows) == 6 and {r["checkpoint"] for r in rows} == {"base", tiny_model.name}
    for r in rows:
        assert r["reference_answer"] and r["judgment_reference_first"] and r["judgment_student_first"]  # raw text kept
        for order in ("reference_first", "student_first"):
            ref, stu = r[f"reference_score_{order}"], r[f"student_score_{order}"]
            assert (ref is None) == (stu is None) and (ref is None or 1 <= ref <= 10)
    for label, s in result.scores.items():
        mine = [r for r in rows if r["checkpoint"] == label]
        judged = [r for r in mine if r["reference_score_reference_first"] is not None]
        assert s["judged_reference_first"] == len(judged) and s["failed_reference_first"] == 3 - len(judged)
        if judged:
            expected = sum(r["student_score_reference_first"] for r in judged) / sum(
                r["reference_score_reference_first"] for r in judged)
            assert s["relative_score_reference_first"] == pytest.approx(expected)
        assert set(s["categories"]) <= {"generic", "knowledge", "writing"}
    scores = pq.read_table(result.files["scores"]).to_pylist()
    assert {(r["checkpoint"], r["category"]) for r in scores if r["category"] == "all"} == {
        ("base", "all"), (tiny_model.name, "all")}
    for uri in result.plots.values():
        assert open(uri, "rb").read(4) == b"\x89PNG"
    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(like_="lion-eval-two")))
    keys = {a.key for a in arts}
    assert {"lion-eval-two", "lion-eval-two-table"} <= keys and "lion-eval-two-relative-by-category" in keys

    # the same evaluation again: every answer and verdict comes from the stores, nothing is asked twice
    with ResponseStore(str(tmp_path / "responses.sqlite")) as rs:
        before = rs.counts()
    again = evaluate(config_path=str(config), checkpoints=["base", str(tiny_model)], eval_set=str(questions), name="two")
    assert again.scores == result.scores
    with ResponseStore(str(tmp_path / "responses.sqlite")) as rs:
        assert rs.counts() == before
