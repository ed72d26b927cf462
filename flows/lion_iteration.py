"""One Lion iteration: imitation, discrimination, generation, then the report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner

from flows.discrimination import discrimination
from flows.generation import generation
from flows.imitation import imitation
from lion_core.report import iteration_summary, merge_usage
from lion_core.student.train import FINAL
from tasks.common import RunContext
from tasks.report import publish_iteration


@flow(name="lion-iteration")
def lion_iteration(ctx: RunContext, k: int) -> dict[str, Any]:
    bounded = {"task_runner": ThreadPoolTaskRunner(max_workers=ctx.config.orchestration.max_parallel_tasks)}
    store = ctx.store()
    train_pool, cache_pool = store.ref(k, "train_pool"), store.ref(k, "cache_pool")
    previous = str(Path(ctx.config.storage.checkpoint_dir(ctx.run_id, k - 1)) / FINAL) if k > 0 else None

    imitated = imitation.with_options(**bounded)(ctx, k, train_pool, previous)
    judged = discrimination.with_options(**bounded)(ctx, k, cache_pool, imitated["checkpoint"])
    generated = generation.with_options(**bounded)(ctx, k, cache_pool, judged["judgments"])

    summary = iteration_summary(
        run_id=ctx.run_id, iteration=k,
        pools={"train_pool": train_pool.rows, "cache_pool": cache_pool.rows},
        next_pools={"train_pool": generated["train_pool"].rows, "cache_pool": generated["cache_pool"].rows},
        discrimination=judged["report"], generation=generated["report"],
        usage=merge_usage([imitated["usage"], judged["usage"], generated["usage"]]),
        checkpoint=imitated["checkpoint"],
        files={"teacher_answers_train": imitated["teacher_answers"].uri, "judgments": judged["judgments"].uri,
               "candidates": generated["candidates"].uri, "next_train_pool": generated["train_pool"].uri,
               "next_cache_pool": generated["cache_pool"].uri},
        plots={},
    )
    return publish_iteration(ctx, k, summary)
