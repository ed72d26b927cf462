"""Discrimination: the referee scores teacher and student answers on the Cache Pool, in both orders."""

from __future__ import annotations

from prefect import flow

from flows.shards import answer_pool, run_shards, shards_of, through_batches
from lion_core.results import BatchWork, DiscriminationResult, Judging, merge_usage
from lion_core.stages import judgments_report
from lion_core.store import PoolRef
from tasks.api import judgments_shard
from tasks.common import RunContext
from tasks.pools import merge_parts
from tasks.student import student_answers


@flow(name="discrimination", flow_run_name="iter-{k}-discrimination")
def discrimination(ctx: RunContext, k: int, cache_pool: PoolRef, checkpoint: str) -> DiscriminationResult:
    """The teacher's and the student's answers for the Cache Pool, and the referee's verdicts on them."""
    teacher, usage = answer_pool(ctx, k, "teacher_answers_cache", cache_pool)  # all but new items: from the store
    student = student_answers(ctx, k, cache_pool, checkpoint)
    judging = Judging(teacher=teacher, student=student)
    batched = through_batches(ctx, "referee", "discrimination",
                              BatchWork(kind="judgments", k=k, pool=cache_pool, judging=judging))
    shards = shards_of(k, "judgments", cache_pool, ctx.config.orchestration.shard_size)
    results = run_shards(judgments_shard, ctx, f"iteration {k} judgments", shards, judging=judging)
    judgments = merge_parts(ctx, k, "judgments", [r.part for r in results], [cache_pool, teacher, student])
    return DiscriminationResult(judgments=judgments, teacher_answers=teacher, student_answers=student,
                                report=judgments_report(judgments),
                                usage=merge_usage([usage, batched, *(r.usage for r in results)]))
