"""One Lion iteration: imitation, discrimination, generation, then the report."""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner

from flows.discrimination import discrimination
from flows.generation import generation
from flows.imitation import imitation
from lion_core.checkpoints import previous_checkpoint
from lion_core.report import iteration_summary, merge_usage
from tasks.common import RunContext
from tasks.report import publish_iteration


@flow(name="lion-iteration")
def lion_iteration(ctx: RunContext, k: int) -> dict[str, Any]:
    bounded = {"task_runner": ThreadPoolTaskRunner(max_workers=ctx.config.orchestration.max_parallel_tasks)}
    store = ctx.store()
    train_pool, cache_pool = store.ref(k, "train_pool"), store.ref(k, "cache_pool")
    previous = previous_checkpoint(store, ctx.config, k)  # trained or carried: as iteration k-1 recorded it

    imitated = imitation.with_options(**bounded)(ctx, k, train_pool, previous)
    judged = discrimination.with_options(**bounded)(ctx, k, cache_pool, imitated["checkpoint"])
    generated = generation.with_options(**bounded)(ctx, k, cache_pool, judged["judgments"])

    summary = iteration_summary(
        run_id=ctx.run_id, iteration=k,
        pools={"train_pool": train_pool.rows, "cache_pool": cache_pool.rows},
        next_pools={"train_pool": generated["train_pool"].rows, "cache_pool": generated["cache_pool"].rows},
        discrimination=judged["report"], generation=generated["report"],
        usage=merge_usage([imitated["usage"], judged["usage"], generated["usage"]]),
        checkpoint=imitated["checkpoint"], checkpoint_record=imitated["checkpoint_record"],
        files={"teacher_answers_train": imitated["teacher_answers"].uri, "judgments": judged["judgments"].uri,
               "candidates": generated["candidates"].uri, "next_train_pool": generated["train_pool"].uri,
               "next_cache_pool": generated["cache_pool"].uri},
        plots={},
    )
    return publish_iteration(ctx, k, summary)
