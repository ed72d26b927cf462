"""One Lion iteration: imitation, discrimination, generation, then the report."""

from __future__ import annotations

from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner

from flows.discrimination import discrimination
from flows.generation import generation
from flows.imitation import imitation
from lion_core.checkpoints import previous_checkpoint
from lion_core.report import iteration_summary
from lion_core.results import IterationSummary, Pools
from tasks.common import RunContext
from tasks.report import publish_iteration


@flow(name="lion-iteration", flow_run_name="{ctx.run_id}-iter-{k}")
def lion_iteration(ctx: RunContext, k: int) -> IterationSummary:
    """Iteration k: the teacher answers the Train Pool and the student imitates it; the referee finds the
    Cache Pool items the student still gets wrong; the generator writes new ones like them."""
    bounded = {"task_runner": ThreadPoolTaskRunner(max_workers=ctx.config.orchestration.max_parallel_tasks)}
    store = ctx.store()
    pools = Pools(train_pool=store.ref(k, "train_pool"), cache_pool=store.ref(k, "cache_pool"))
    previous = previous_checkpoint(store, ctx.config, k)  # trained or carried: as iteration k-1 recorded it

    imitated = imitation.with_options(**bounded)(ctx, k, pools.train_pool, previous)
    judged = discrimination.with_options(**bounded)(ctx, k, pools.cache_pool, imitated.checkpoint)
    generated = generation.with_options(**bounded)(ctx, k, pools.cache_pool, judged.judgments)

    return publish_iteration(ctx, k, iteration_summary(ctx.run_id, k, pools, imitated, judged, generated))
