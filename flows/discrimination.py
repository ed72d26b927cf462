"""Discrimination: the referee scores teacher and student answers on the Cache Pool, in both orders."""

from __future__ import annotations

from prefect import flow

from flows.shards import answer_pool, judge_pool
from lion_core.discrimination.stage import judgments_report
from lion_core.results import DiscriminationResult, Judging, merge_usage
from lion_core.store import PoolRef
from tasks.common import RunContext
from tasks.student import student_answers


@flow(name="discrimination", flow_run_name="iter-{k}-discrimination")
def discrimination(ctx: RunContext, k: int, cache_pool: PoolRef, checkpoint: str) -> DiscriminationResult:
    """The teacher's and the student's answers for the Cache Pool, and the referee's verdicts on them."""
    teacher, teacher_usage = answer_pool(ctx, k, "teacher_answers_cache", cache_pool)  # all but new items: from the store
    student = student_answers(ctx, k, cache_pool, checkpoint)
    judgments, referee_usage = judge_pool(ctx, k, "judgments", cache_pool, Judging(teacher=teacher, student=student),
                                          f"iteration {k} judgments")
    return DiscriminationResult(judgments=judgments, teacher_answers=teacher, student_answers=student,
                                report=judgments_report(ctx.store(), judgments),
                                usage=merge_usage([teacher_usage, referee_usage]))
