"""API stages as Prefect tasks: one task per shard of a pool, each holding a rate-limit slot."""

from __future__ import annotations

from typing import Any

from prefect import task

from lion_core import stages
from lion_core.store import PoolRef
from tasks.common import RunContext, api_gateway, input_cache_key, transient

_API = dict(retries=3, retry_delay_seconds=30, retry_condition_fn=transient, cache_key_fn=input_cache_key,
            persist_result=True)


@task(name="teacher-answers-shard", tags=["lion", "api", "teacher"], **_API)
def teacher_answers_shard(ctx: RunContext, k: int, name: str, pool: PoolRef, lo: int, hi: int) -> dict[str, Any]:
    """Teacher answers for rows [lo, hi) of a pool: a part file ref and this shard's API usage."""
    with api_gateway(ctx, "teacher") as (gateway, accounting):
        ref = stages.answer_part(ctx.store(), k, name, pool, lo, hi, gateway, "imitation",
                                 ctx.config.orchestration.max_failed_fraction)
    return {"part": ref, "usage": accounting.table()}


@task(name="judgments-shard", tags=["lion", "api", "referee"], **_API)
def judgments_shard(ctx: RunContext, k: int, cache_pool: PoolRef, teacher: PoolRef, student: PoolRef,
                    lo: int, hi: int) -> dict[str, Any]:
    """The referee's verdicts, both orders, for Cache Pool rows [lo, hi)."""
    with api_gateway(ctx, "referee") as (gateway, accounting):
        ref = stages.discrimination_part(ctx.store(), k, cache_pool, teacher, student, lo, hi, gateway, ctx.config)
    return {"part": ref, "usage": accounting.table()}


@task(name="generate-instructions", tags=["lion", "api", "generator"], **_API)
def generate_instructions(ctx: RunContext, k: int, cache_pool: PoolRef, judgments: PoolRef) -> dict[str, Any]:
    """New instructions from hard and easy seeds, ROUGE-L filtered. Rounds depend on what the filter
    kept, so they run in one task; each round's requests go out in shard-sized chunks, each holding a
    slot of the key's limit, and a retried task re-sends nothing the response store holds."""
    with api_gateway(ctx, "generator") as (gateway, accounting):
        ref, result = stages.generation_stage(ctx.store(), k, cache_pool, judgments, gateway, ctx.config)
    return {"candidates": ref, "report": result.report, "usage": accounting.table()}
