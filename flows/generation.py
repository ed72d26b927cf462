"""Generation: new instructions from hard and easy items, ROUGE-L filtered; then the pool update."""

from __future__ import annotations

from prefect import flow

from flows.shards import through_batches
from lion_core.results import BatchWork, GenerationResult, merge_usage
from lion_core.store import PoolRef
from tasks.api import generate_instructions
from tasks.common import RunContext, configured
from tasks.pools import update_pools


@flow(name="generation", flow_run_name="iter-{k}-generation")
def generation(ctx: RunContext, k: int, cache_pool: PoolRef, judgments: PoolRef | None) -> GenerationResult:
    """New instructions from the hard and easy items (no judgments: from the whole Cache Pool); Train := new,
    Cache := old + new, in one commit."""
    batched = through_batches(ctx, "generator", "generation",
                              BatchWork(kind="generation", k=k, pool=cache_pool, judgments=judgments))
    made = configured(generate_instructions, ctx.config)(ctx, k, cache_pool, judgments)
    pools = update_pools(ctx, k, cache_pool, made.candidates)
    return GenerationResult(candidates=made.candidates, next_pools=pools, report=made.report,
                            usage=merge_usage([batched, made.usage]))
