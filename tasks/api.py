"""API stages as Prefect tasks: one task per shard of a pool, each holding a rate-limit slot."""

from __future__ import annotations

from prefect import task

from lion_core import stages
from lion_core.results import Candidates, Judging, Shard, ShardResult
from lion_core.store import PoolRef
from tasks.common import RunContext, api_gateway, backoff, input_cache_key, transient

# Defaults; flows apply the run's orchestration settings with tasks.common.configured().
_API = dict(retries=3, retry_delay_seconds=backoff(30, 3), retry_jitter_factor=0.5, retry_condition_fn=transient,
            cache_key_fn=input_cache_key, persist_result=True)


@task(name="answers-shard", tags=["lion", "api"], task_run_name="{shard.name}-shard-{shard.index:02d}", **_API)
def answers_shard(ctx: RunContext, shard: Shard, role: str = "teacher", stage: str = "imitation") -> ShardResult:
    """Answers of an API role (the teacher; the reference model in evaluations) for the shard's rows."""
    with api_gateway(ctx, role) as (gateway, accounting):
        part = stages.answer_part(ctx.store(), shard, gateway, stage, ctx.config.orchestration.max_failed_fraction)
    return ShardResult(part=part, usage=accounting.table())


def judging_run_name(parameters: dict) -> str:
    """`referee-shard-07`; in an evaluation, the checkpoint's label too (`judge-base-shard-00`)."""
    shard, judging = parameters["shard"], parameters["judging"]
    label = shard.name.removeprefix("judgments").lstrip("-")
    return f"{judging.role}-{label + '-' if label else ''}shard-{shard.index:02d}"


@task(name="judgments-shard", tags=["lion", "api"], task_run_name=judging_run_name, **_API)
def judgments_shard(ctx: RunContext, shard: Shard, judging: Judging) -> ShardResult:
    """Verdicts of the referee (or the evaluation's judge), both orders, for the shard's rows."""
    with api_gateway(ctx, judging.role) as (gateway, accounting):
        part = stages.discrimination_part(ctx.store(), shard, judging, gateway, ctx.config)
    return ShardResult(part=part, usage=accounting.table())


@task(name="generate-instructions", tags=["lion", "api", "generator"], task_run_name="iter-{k}-generator", **_API)
def generate_instructions(ctx: RunContext, k: int, cache_pool: PoolRef, judgments: PoolRef) -> Candidates:
    """New instructions from hard and easy seeds, ROUGE-L filtered. Rounds depend on what the filter
    kept, so they run in one task; each round's requests go out in shard-sized chunks, each holding a
    slot of the key's limit, and a retried task re-sends nothing the response store holds."""
    with api_gateway(ctx, "generator") as (gateway, accounting):
        ref, report = stages.generation_stage(ctx.store(), k, cache_pool, judgments, gateway, ctx.config)
    return Candidates(candidates=ref, report=report, usage=accounting.table())
