import json

import pytest

from lion_core.errors import EvaluationIncomplete, LionError, SeedError
from lion_core.evaluation import (EvalQuestion, check_coverage, checkpoint_scores, load_eval_set, question_pool,
                                  resolve_checkpoints, scores_markdown, scores_table)


def _row(qid, ref_first, stu_first):
    """A judged row as discriminate() makes it: (reference, student) scores per order, None = unparsed."""
    r = {"id": qid, "t_score_t_first": None, "s_score_t_first": None, "t_score_s_first": None, "s_score_s_first": None,
         "mean_t": None, "mean_s": None}
    if ref_first:
        r["t_score_t_first"], r["s_score_t_first"] = ref_first
    if stu_first:
        r["t_score_s_first"], r["s_score_s_first"] = stu_first
    if ref_first and stu_first:
        r["mean_t"] = (ref_first[0] + stu_first[0]) / 2
        r["mean_s"] = (ref_first[1] + stu_first[1]) / 2
    return r


CATS = {"1": "math", "2": "math", "3": "writing", "4": "writing", "5": "writing"}


def test_relative_scores_per_order_average_and_category():
    rows = [
        _row("1", (8, 6), (9, 7)),    # loss: means 8.5 vs 6.5
        _row("2", (5, 5), (6, 6)),    # tie
        _row("3", (6, 8), (7, 9)),    # win
        _row("4", (10, 5), None),     # student-first verdict unparsed: counted in one order only
        _row("5", None, None),        # judged in neither order
    ]
    s = checkpoint_scores(rows, CATS, n_questions=6)  # question 6 had no reference answer
    assert s["relative_score_reference_first"] == pytest.approx((6 + 5 + 8 + 5) / (8 + 5 + 6 + 10))
    assert s["relative_score_student_first"] == pytest.approx((7 + 6 + 9) / (9 + 6 + 7))
    assert s["relative_score"] == pytest.approx((24 / 29 + 1.0) / 2)
    assert (s["wins"], s["ties"], s["losses"]) == (1, 1, 1)
    assert (s["judged_reference_first"], s["failed_reference_first"]) == (4, 2)
    assert (s["judged_student_first"], s["failed_student_first"]) == (3, 3)
    assert s["coverage_student_first"] == pytest.approx(0.5) and s["missing_reference"] == 1
    assert s["order_inconsistency_rate"] == 0.0
    math = s["categories"]["math"]
    assert math["relative_score_reference_first"] == pytest.approx(11 / 13)
    assert math["relative_score"] == pytest.approx((11 / 13 + 13 / 15) / 2)
    writing = s["categories"]["writing"]
    assert writing["relative_score_student_first"] == pytest.approx(9 / 7) and writing["questions"] == 3


def test_order_inconsistency_counts_verdicts_that_flip_with_the_order():
    rows = [_row("1", (8, 6), (6, 8)), _row("2", (5, 7), (5, 7)), _row("3", (5, 5), (6, 5))]
    s = checkpoint_scores(rows, CATS, 3)
    assert s["order_inconsistency_rate"] == pytest.approx(2 / 3)
    assert (s["wins"], s["ties"], s["losses"]) == (1, 1, 1)


def test_nothing_judged_gives_no_score_and_fails_the_coverage_check():
    s = checkpoint_scores([_row("1", None, None)], CATS, 1)
    assert s["relative_score"] is None and s["relative_score_reference_first"] is None
    with pytest.raises(EvaluationIncomplete, match=r"iter-1: judged coverage reference first 0% \(0 of 1\)"):
        check_coverage("iter-1", s, 0.9)
    ok = checkpoint_scores([_row("1", (7, 7), (7, 7))], CATS, 1)
    check_coverage("base", ok, 1.0)
    assert ok["relative_score"] == 1.0 and ok["ties"] == 1


def test_tables_and_markdown():
    scores = {"base": checkpoint_scores([_row("1", (8, 4), (8, 4))], CATS, 1),
              "iter-0": checkpoint_scores([_row("1", (8, 6), (8, 6))], CATS, 1)}
    table = scores_table(scores)
    assert [(r["checkpoint"], r["category"]) for r in table] == [("base", "all"), ("base", "math"),
                                                                ("iter-0", "all"), ("iter-0", "math")]
    md = scores_markdown("t", scores, "gpt-3.5-turbo", "gpt-4")
    assert "| base | **50.0%** |" in md and "| iter-0 | **75.0%** |" in md and "| math | 50.0% | 75.0% |" in md


def test_vicuna80_and_its_llm_judge_variant_load_the_same(shared_data):
    a = load_eval_set(str(shared_data / "vicuna80" / "question.jsonl"))
    b = load_eval_set(str(shared_data / "vicuna80" / "llm_judge_vicuna_bench" / "question.jsonl"))
    c = load_eval_set(str(shared_data / "vicuna80" / "question.parquet"))
    assert len(a) == 80 and a == b == c
    from collections import Counter
    counts = Counter(q.category for q in a)
    assert counts["coding"] == 7 and counts["math"] == 3 and counts["generic"] == 10
    assert len(question_pool(a)) == 80


def test_bad_eval_sets_name_the_record(tmp_path):
    p = tmp_path / "q.jsonl"
    p.write_text(json.dumps({"question_id": 1, "text": "Hi?"}) + "\n" + json.dumps({"question_id": 2}) + "\n"
                 + json.dumps({"question_id": 1, "text": "Again?"}) + "\n")
    with pytest.raises(SeedError) as err:
        load_eval_set(str(p))
    assert "line 2: no question text" in str(err.value) and "line 3: question id '1' repeats" in str(err.value)
    with pytest.raises(SeedError, match="unsupported eval set format"):
        load_eval_set(str(tmp_path / "q.csv"))
    ok = tmp_path / "ok.json"
    ok.write_text(json.dumps([{"question": "What is 2+2?", "category": "math"}, {"instruction": "Write a haiku."}]))
    qs = load_eval_set(str(ok))
    assert qs == [EvalQuestion("1", "What is 2+2?", "math"), EvalQuestion("2", "Write a haiku.", "uncategorized")]


def test_checkpoint_specs(tmp_path):
    from lion_core.config import parse_config

    cfg = parse_config({"storage": {"runs_root": str(tmp_path)}, "student": {"model": str(tmp_path / "base-model")}})
    for k in (0, 1):
        final = tmp_path / "r1" / "checkpoints" / f"iter-{k}" / "final"
        final.mkdir(parents=True)
        (final / "config.json").write_text("{}")
        (final / ".complete").write_text("")
    got = resolve_checkpoints(cfg, ["run:r1", "base"])
    assert [label for label, _ in got] == ["base", "r1-iter-0", "r1-iter-1"]
    assert resolve_checkpoints(cfg, [str(tmp_path / "r1" / "checkpoints" / "iter-1" / "final")])[0][0] == "iter-1"
    with pytest.raises(LionError, match="not a model folder"):
        resolve_checkpoints(cfg, [str(tmp_path / "nope")])
    with pytest.raises(LionError, match="no finished checkpoint"):
        resolve_checkpoints(cfg, ["run:other"])
