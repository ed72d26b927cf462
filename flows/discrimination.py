"""Discrimination: the referee scores teacher and student answers on the Cache Pool, in both orders."""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.shards import answer_pool, run_shards
from lion_core.report import merge_usage
from lion_core.stages import judgments_report, shard_bounds
from lion_core.store import PoolRef
from tasks.api import judgments_shard
from tasks.common import RunContext
from tasks.pools import merge_parts
from tasks.student import student_answers


@flow(name="discrimination")
def discrimination(ctx: RunContext, k: int, cache_pool: PoolRef, checkpoint: str) -> dict[str, Any]:
    teacher, usage = answer_pool(ctx, k, "teacher_answers_cache", cache_pool)  # all but new items: from the store
    student = student_answers(ctx, k, cache_pool, checkpoint)
    bounds = shard_bounds(cache_pool.rows, ctx.config.orchestration.shard_size)
    results = run_shards(judgments_shard, ctx, f"iteration {k} judgments",
                         [{"k": k, "cache_pool": cache_pool, "teacher": teacher, "student": student, "lo": lo, "hi": hi}
                          for lo, hi in bounds])
    judgments = merge_parts(ctx, k, "judgments", [r["part"] for r in results], [cache_pool, teacher, student])
    return {"judgments": judgments, "teacher_answers": teacher, "student_answers": student,
            "report": judgments_report(judgments), "usage": merge_usage([usage, *(r["usage"] for r in results)])}
