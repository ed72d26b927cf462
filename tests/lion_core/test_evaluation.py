import json

import pytest

from lion_core.errors import EvaluationIncomplete, LionError, SeedError
from lion_core.evaluation import (
    EvalQuestion,
    bootstrap_interval,
    check_coverage,
    checkpoint_scores,
    load_eval_set,
    question_pool,
    question_rows,
    relative_score_of,
    resolve_checkpoints,
    run_scores,
    scores_markdown,
    scores_table,
)


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



def test_self_instruct_seed_tasks_keep_their_input(shared_data):
    """Self-Instruct records keep the input in `instances[0].input`; it is part of the question."""
    path = shared_data / "stanford_alpaca" / "seed_tasks.jsonl"
    raw = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    expected = {r["id"]: r["instances"][0]["input"] if r["instances"][0]["input"].strip() else "" for r in raw}
    with_input = sum(1 for v in expected.values() if v)
    assert len(raw) == 175 and with_input == 125  # counted from the raw file, independently of the loader
    qs = load_eval_set(str(path))
    assert len(qs) == 175 and sum(1 for q in qs if q.input) == with_input
    assert {q.id: q.input for q in qs} == expected
    by_id = {q.id: q for q in qs}
    assert by_id["seed_task_1"] == EvalQuestion("seed_task_1", "What is the relation between the given pairs?",
                                                "uncategorized", "Night : Day :: Right : Left")
    assert by_id["seed_task_2"].input == "- Brack Obama\n- Elon Musk\n- Taylor Swift"
    assert by_id["seed_task_0"].input == ""
    assert load_eval_set(str(shared_data / "stanford_alpaca" / "seed_tasks.parquet")) == qs
    pool = question_pool(qs)
    assert sum(1 for r in pool if r["input"]) == with_input and len({r["id"] for r in pool}) == 175


def test_alpaca_records_and_instances_give_the_input(tmp_path):
    p = tmp_path / "q.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in [
        {"instruction": "Translate to French.", "input": "Good morning", "output": "Bonjour"},
        {"instruction": "Write a haiku.", "input": "", "output": "..."},
        {"instruction": "Sum the numbers.", "input": "   \n", "output": "..."},
        {"instruction": "Sort the list.", "instances": [{"input": "3, 1, 2", "output": "1, 2, 3"},
                                                        {"input": "b, a", "output": "a, b"}]},
        {"instruction": "Tell a joke.", "instances": [{"input": " \t", "output": "..."}]},
        {"instruction": "Name a color.", "instances": [{"output": "Red"}]},
        {"question_id": 7, "text": "What is 2+2?", "category": "math"},
    ]) + "\n")
    qs = load_eval_set(str(p))
    assert [q.input for q in qs] == ["Good morning", "", "", "3, 1, 2", "", "", ""]
    assert qs[0] == EvalQuestion("1", "Translate to French.", "uncategorized", "Good morning")
    assert qs[-1] == EvalQuestion("7", "What is 2+2?", "math", "")


def test_a_bad_input_is_reported_by_position(tmp_path):
    p = tmp_path / "q.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in [
        {"instruction": "Fine.", "input": "ok"},
        {"instruction": "Top-level number.", "input": 5},
        {"instruction": "Instance list.", "instances": [{"input": ["a", "b"], "output": "x"}]},
        {"instruction": "Instances not a list.", "instances": {"input": "a"}},
    ]) + "\n")
    with pytest.raises(SeedError) as err:
        load_eval_set(str(p))
    msg = str(err.value)
    assert "3 bad records" in msg and "line 1" not in msg
    assert "line 2: field 'input' must be a string, got int" in msg
    assert "line 3 instances[0]: field 'input' must be a string, got list" in msg
    assert "line 4: field 'instances' must be a non-empty list of objects" in msg


def test_question_rows_and_pool_carry_the_input():
    qs = [EvalQuestion("a", "Translate to French.", "uncategorized", "Good morning"),
          EvalQuestion("b", "Write a haiku.", "poetry")]
    assert question_rows(qs) == [{"id": "a", "instruction": "Translate to French.", "input": "Good morning"},
                                 {"id": "b", "instruction": "Write a haiku.", "input": ""}]
    pool = question_pool(qs)
    assert [(r["instruction"], r["input"]) for r in pool] == [("Translate to French.", "Good morning"),
                                                              ("Write a haiku.", "")]
    assert json.loads(pool[0]["metadata"]) == {"question_id": "a", "category": "uncategorized"}
    # the same instruction with two different inputs is two questions, not a duplicate
    same = [EvalQuestion("1", "Sort the list.", "x", "3, 1, 2"), EvalQuestion("2", "Sort the list.", "x", "b, a")]
    assert len({r["id"] for r in question_pool(same)}) == 2
    with pytest.raises(SeedError, match="question 2: the same text as an earlier question"):
        question_pool([same[0], EvalQuestion("2", "Sort the list.", "x", "3, 1, 2")])

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


def test_bootstrap_interval_over_questions():
    import random

    rng = random.Random(1)
    rows = [_row(str(i), (8, s), (8, s)) for i, s in enumerate(rng.choice([2, 4, 6, 8]) for _ in range(40))]
    point = relative_score_of(rows)
    assert point == checkpoint_scores(rows, {r["id"]: "all" for r in rows}, 40)["relative_score"]
    lo, hi = bootstrap_interval(rows)
    assert lo < point < hi and 0 < lo and hi < 1
    assert bootstrap_interval(rows) == (lo, hi)  # a fixed seed: the same interval every time
    lo4, hi4 = bootstrap_interval(rows * 4)  # four times the questions: about half as wide
    assert hi4 - lo4 < 0.7 * (hi - lo)
    same = [_row(str(i), (8, 4), (8, 4)) for i in range(10)]
    assert bootstrap_interval(same) == (0.5, 0.5)
    assert bootstrap_interval([]) is None
    assert bootstrap_interval([_row("1", None, None)]) is None
    scores = checkpoint_scores(rows, {r["id"]: "all" for r in rows}, 40)
    assert scores["relative_score_ci95"] == [lo, hi]
    table = scores_table({"base": scores})[0]
    assert (table["relative_score_ci95_low"], table["relative_score_ci95_high"]) == (lo, hi)
    assert f"{lo:.1%} to {hi:.1%}" in scores_markdown("t", {"base": scores}, "ref", "judge")


def test_run_scores_are_keyed_by_base_iteration_and_final():
    s = {"relative_score": 0.5, "relative_score_ci95": [0.4, 0.6], "wins": 1, "ties": 0, "losses": 2}
    keyed = run_scores({"base": s, "demo-1-iter-0": s, "demo-1-iter-12": s, "demo-1-final": s}, "demo-1")
    assert set(keyed) == {"base", 0, 12, "final"} and keyed[12]["relative_score_ci95"] == [0.4, 0.6]
