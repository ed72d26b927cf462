"""lion_core.compare: what runs may be compared, and the paired differences of their scores."""

import random

import pytest

from lion_core.compare import Incomparable, check_comparable, compare_markdown, compare_pairs, judged_rows, paired_difference


def _config(eval_set="q.jsonl", judge_model="judge", loop=None):
    api = {"base_url": "http://api", "model": "ref", "sampling": {"temperature": 0.7}}
    return {"loop": loop or {"selection": "adversarial"}, "referee": {**api, "model": "referee"},
            "evaluation": {"eval_set": eval_set, "reference": api, "judge": {**api, "model": judge_model}}}


def test_runs_compare_when_their_yardstick_is_the_same_and_are_refused_by_name_when_not():
    check_comparable({"a": _config(), "b": _config(loop={"selection": "random", "tau": 2.0})})  # the loop may differ
    with pytest.raises(Incomparable, match=r"evaluation.eval_set: a: q.jsonl; b: other.jsonl"):
        check_comparable({"a": _config(), "b": _config(eval_set="other.jsonl")})
    with pytest.raises(Incomparable, match=r"evaluation.judge: .*'model': 'judge'.*'model': 'another'"):
        check_comparable({"a": _config(), "b": _config(judge_model="another")})
    no_judge = _config()
    del no_judge["evaluation"]["judge"]  # the referee judges: a run judged by its referee is not one judged by `judge`
    with pytest.raises(Incomparable, match="evaluation.judge"):
        check_comparable({"a": _config(), "b": no_judge})
    with pytest.raises(Exception, match="at least two different runs"):
        check_comparable({"--config": _config(), "a": _config()})
    moved = _config()
    moved["referee"]["base_url"] = moved["evaluation"]["reference"]["base_url"] = "http://elsewhere"
    check_comparable({"a": _config(), "b": moved})  # the same models served elsewhere: the same yardstick


def _rows(scores):
    """Judged rows: (reference, student) the same in both orders."""
    return {f"q{i}": {"t_score_t_first": t, "s_score_t_first": s, "t_score_s_first": t, "s_score_s_first": s}
            for i, (t, s) in enumerate(scores)}


def test_the_paired_difference_and_its_interval():
    rng = random.Random(1)
    ref = [8.0] * 60
    a = _rows([(t, rng.uniform(5, 8)) for t in ref])  # about 81% of the reference
    b = _rows([(r["t_score_t_first"], r["s_score_t_first"] - 2) for r in a.values()])  # 2 points worse everywhere
    same = paired_difference(a, a)
    assert same["difference"] == 0 and same["ci95"] == [0, 0] and same["questions"] == 60
    d = paired_difference(a, b)
    assert d["difference"] == pytest.approx(2 / 8) and d["ci95"][0] == pytest.approx(0.25) == d["ci95"][1]
    noisy = _rows([(8.0, rng.uniform(4, 9)) for _ in ref])
    n = paired_difference(a, noisy)
    assert n["ci95"][0] < n["difference"] < n["ci95"][1] and n["ci95"][1] - n["ci95"][0] > 0.02
    fewer = dict(list(b.items())[:10])
    assert paired_difference(a, fewer)["questions"] == 10  # only the questions both were judged on
    # an order one run was not judged in counts for neither: b was not judged reference-first on q1
    both = {"t_score_t_first": 8.0, "s_score_t_first": 4.0, "t_score_s_first": 8.0, "s_score_s_first": 4.0}
    full = {"q0": both, "q1": {**both, "s_score_t_first": 8.0, "s_score_s_first": 8.0}}
    half = {"q0": both, "q1": {**full["q1"], "t_score_t_first": None, "s_score_t_first": None}}
    assert paired_difference(full, half)["difference"] == pytest.approx(0.0)  # unpaired it would be +12.5%
    pairs = compare_pairs({"a": a, "b": b, "c": noisy})
    assert [(p["a"], p["b"]) for p in pairs] == [("a", "b"), ("a", "c"), ("b", "c")]
    text = compare_markdown([{"run": "a", "selection": "adversarial", "relative_score": 0.8, "relative_score_ci95": (0.7, 0.9),
                              "api_requests": 12, "paid_calls": 10, "cost_usd": 0.5, "training_s": 30}], pairs)
    assert "| a | adversarial | 80.0% | 70.0% to 90.0% | 12 | 10 | 0.5000 | 30 |" in text and "| a - b | 60 | +25.0% |" in text


def test_judged_rows_read_an_evaluations_results_table():
    results = [{"checkpoint": "a-final", "question_id": "q1", "reference_score_reference_first": 8.0,
                "student_score_reference_first": 6.0, "reference_score_student_first": 7.0,
                "student_score_student_first": 5.0},
               {"checkpoint": "b-final", "question_id": "q1", "reference_score_reference_first": 1.0,
                "student_score_reference_first": 1.0, "reference_score_student_first": 1.0,
                "student_score_student_first": 1.0}]
    assert judged_rows(results, "a-final") == {"q1": {"t_score_t_first": 8.0, "s_score_t_first": 6.0,
                                                      "t_score_s_first": 7.0, "s_score_s_first": 5.0}}
