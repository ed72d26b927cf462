from lion_core.plots import gap_histogram, hard_fraction, leading_words
from lion_core.report import iteration_summary, leading_word, summary_markdown, summary_text_table
from lion_core.results import (
    CheckpointRecord,
    DiscriminationReport,
    DiscriminationResult,
    GenerationReport,
    GenerationResult,
    ImitationResult,
    Pools,
    TrainingInputs,
    UsageRow,
    merge_usage,
)
from lion_core.store import PoolRef

PNG = b"\x89PNG\r\n\x1a\n"


def test_leading_word_skips_politeness_and_lowercases():
    assert leading_word("Please write a poem about rain.") == "write"
    assert leading_word("What is the capital of France?") == "what"
    assert leading_word("  123 !!") == "(none)"


def test_usage_from_several_tasks_is_summed_per_role_and_stage():
    a = [UsageRow(role="teacher", stage="imitation", requests=3, cached=1, calls=2, retries=0, failures=0,
                  prompt_tokens=10, completion_tokens=5, cost_usd=0.5)]
    b = [a[0].model_copy(update={"requests": 2, "cost_usd": 0.25}),
         a[0].model_copy(update={"role": "referee", "stage": "discrimination"})]
    merged = merge_usage([a, b])
    assert [(r.role, r.requests, r.cost_usd) for r in merged] == [("referee", 3, 0.5), ("teacher", 5, 0.75)]


def _ref(name, rows):
    return PoolRef(uri=f"run://r/iter-0/{name}.parquet", sha256="0" * 64, rows=rows, schema_version="pool/1")


def _summary():
    disc = DiscriminationReport(
        items=10, hard=4, easy=5, unresolved=1, missing_answer=0, hard_fraction=4 / 9, coverage_teacher_first=0.9,
        coverage_student_first=1.0, order_inconsistency_rate=0.25, mean_teacher_score=7.5, mean_student_score=5.0,
        resolved=9, unresolved_by_reason={}, hard_empty_answer=0, zero_scores=0, teacher_score_histogram={},
        student_score_histogram={}, gap_histogram={}, reasks=0)
    gen = GenerationReport(
        target=4, accepted_total=3, accepted={"hard": 2, "easy": 1}, requests=8, outcome="request budget spent",
        rejected_by_reason={"rouge_l": 4, "unparseable": 1}, quota={"hard": 2, "easy": 2}, request_budget=8, rounds=2,
        truncated_by_reason={}, by_seed_input={}, fresh_draws=8, stored_draws=0, hard_seeds=4, easy_seeds=5)
    usage = [UsageRow(role="teacher", stage="imitation", requests=3, cached=0, calls=3, retries=1, failures=0,
                      prompt_tokens=30, completion_tokens=60, cost_usd=0.002)]
    record = CheckpointRecord(status="trained", source_iteration=0, reason=None, train_rows=10, path="/ck/iter-0/final")
    imitated = ImitationResult(teacher_answers=_ref("teacher_answers_train", 10),
                               training=TrainingInputs(start_from="/base", answers=_ref("teacher_answers_train", 10)),
                               train_data=_ref("teacher_answers_train", 10), checkpoint="/ck/iter-0/final",
                               checkpoint_record=record, usage=usage)
    judged = DiscriminationResult(judgments=_ref("judgments", 10), teacher_answers=_ref("teacher_answers_cache", 10),
                                  student_answers=_ref("student_answers", 10), report=disc, usage=[])
    generated = GenerationResult(candidates=_ref("candidates", 8),
                                 next_pools=Pools(train_pool=_ref("train_pool", 3), cache_pool=_ref("cache_pool", 13)),
                                 report=gen, usage=[])
    pools = Pools(train_pool=_ref("train_pool", 10), cache_pool=_ref("cache_pool", 10))
    summary = iteration_summary("r", 0, pools, imitated, judged, generated)
    return summary.model_copy(update={"plots": {"score_gap": "/r/iter-0/plots/score_gap.png"}})


def test_the_markdown_report_names_every_figure_the_ui_needs():
    md = summary_markdown(_summary())
    for text in ("| Train Pool | 10 | 3 |", "| Cache Pool | 10 | 13 |", "**4 hard**, 5 easy, 1 unresolved",
                 "teacher first 90.0%", "order inconsistency 25.0%", "accepted 3 of 4", "| rouge_l | 4 |",
                 "| unparseable | 1 |", "| teacher | interactive | 3 | 0 | 3 | 1 | 0 | 30 | 60 | 0.0020 |", "/ck/iter-0/final",
                 "score_gap.png"):
        assert text in md, text
    table = summary_text_table([_summary()])
    assert "44%" in table and "13" in table.splitlines()[1]
    scored = summary_text_table([_summary()], {"base": {"relative_score": 0.25, "relative_score_ci95": [0.2, 0.3]},
                                               "final": {"relative_score": 0.6, "relative_score_ci95": [0.55, 0.65]}})
    head, base, it, final = scored.splitlines()
    assert "rel. score" in head and "95% interval" in head
    assert base.split() == ["base", "25.0%", "20.0%-30.0%"] and final.split() == ["final", "60.0%", "55.0%-65.0%"]
    assert it.split()[-2:] == ["-", "-"]  # this iteration's checkpoint was not evaluated


def test_charts_are_png():
    assert gap_histogram([-1.0, 0.5, 2.0, 3.5], 1.0, 0).startswith(PNG)
    assert gap_histogram([], 1.0, 0).startswith(PNG)
    assert hard_fraction([(0, 0.4), (1, 0.3)]).startswith(PNG)
    assert leading_words(["Write a poem"], ["Write a poem", "What is x?"]).startswith(PNG)


def test_the_final_report_lists_what_resumes_changed():
    from lion_core.report import final_markdown

    resumes = [{"at": "2026-11-30T22:00:00+00:00", "changed": [
        {"field": "teacher.rate_limits.requests_per_minute", "old": 500, "new": 250}]}]
    md = final_markdown("r", "/runs/r/checkpoints/final", {"status": "trained", "iteration": 2, "train_rows": 4}, [],
                        resumes)
    assert "| 2026-11-30T22:00:00+00:00 | `teacher.rate_limits.requests_per_minute` | `500` | `250` |" in md
    assert "Resumed" not in final_markdown("r", "/f", {"status": "trained", "iteration": 2, "train_rows": 4}, [])
