"""API stages as Prefect tasks: one task per shard of a pool, each holding a rate-limit slot."""

from __future__ import annotations

from typing import Any

from prefect import task

from lion_core import stages
from lion_core.limits import role_config
from lion_core.store import PoolRef
from tasks.common import RunContext, api_gateway, backoff, input_cache_key, transient

# Defaults; flows apply the run's orchestration settings with tasks.common.configured().
_API = dict(retries=3, retry_delay_seconds=backoff(30, 3), retry_jitter_factor=0.5, retry_condition_fn=transient,
            cache_key_fn=input_cache_key, persist_result=True)


@task(name="answers-shard", tags=["lion", "api"], **_API)
def answers_shard(ctx: RunContext, k: int, name: str, pool: PoolRef, lo: int, hi: int, role: str = "teacher",
                  stage: str = "imitation") -> dict[str, Any]:
    """Answers of an API role (the teacher; the reference model in evaluations) for rows [lo, hi) of a
    pool: a part file ref and this shard's API usage."""
    with api_gateway(ctx, role) as (gateway, accounting):
        ref = stages.answer_part(ctx.store(), k, name, pool, lo, hi, gateway, stage,
                                 ctx.config.orchestration.max_failed_fraction)
    return {"part": ref, "usage": accounting.table()}


@task(name="judgments-shard", tags=["lion", "api"], **_API)
def judgments_shard(ctx: RunContext, k: int, cache_pool: PoolRef, teacher: PoolRef, student: PoolRef,
                    lo: int, hi: int, name: str = "judgments", role: str = "referee",
                    silent_student: str | None = None) -> dict[str, Any]:
    """Verdicts of the referee (or the evaluation's judge), both orders, for pool rows [lo, hi)."""
    with api_gateway(ctx, role) as (gateway, accounting):
        ref = stages.discrimination_part(ctx.store(), k, cache_pool, teacher, student, lo, hi, gateway, ctx.config,
                                         name=name, referee=role_config(ctx.config, role),
                                         silent_student=silent_student)
    return {"part": ref, "usage": accounting.table()}


@task(name="generate-instructions", tags=["lion", "api", "generator"], **_API)
def generate_instructions(ctx: RunContext, k: int, cache_pool: PoolRef, judgments: PoolRef) -> dict[str, Any]:
    """New instructions from hard and easy seeds, ROUGE-L filtered. Rounds depend on what the filter
    kept, so they run in one task; each round's requests go out in shard-sized chunks, each holding a
    slot of the key's limit, and a retried task re-sends nothing the response store holds."""
    with api_gateway(ctx, "generator") as (gateway, accounting):
        ref, result = stages.generation_stage(ctx.store(), k, cache_pool, judgments, gateway, ctx.config)
    return {"candidates": ref, "report": result.report, "usage": accounting.table()}
