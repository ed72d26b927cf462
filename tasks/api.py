"""API stages as Prefect tasks: one task per shard of a pool, each holding a rate-limit slot."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from lion_core.batch_work import replay_requests
from lion_core.discrimination.stage import discrimination_part
from lion_core.generation.stage import generation_stage
from lion_core.imitation.answers import answer_part
from lion_core.limits import limit_name, role_config
from lion_core.llm.accounting import Accounting
from lion_core.llm.budget import Budget
from lion_core.llm.gateway import Gateway
from lion_core.llm.replay import batch_pass as look_at_batches
from lion_core.llm.replay import batch_runner
from lion_core.llm.responses import ResponseStore
from lion_core.results import BatchPassResult, BatchWork, Candidates, Judging, Shard, ShardResult
from lion_core.store import PoolRef
from lion_prefect.slots import SlottedGateway
from tasks.common import RunContext, api_gateway, backoff, input_cache_key, role_endpoint, transient

# Defaults; flows apply the run's orchestration settings with tasks.common.configured().
_API = dict(retries=3, retry_delay_seconds=backoff(30, 3), retry_jitter_factor=0.5, retry_condition_fn=transient,
            cache_key_fn=input_cache_key, persist_result=True)


@task(name="answers-shard", tags=["lion", "api"], task_run_name="{shard.name}-shard-{shard.index:02d}", **_API)
def answers_shard(ctx: RunContext, shard: Shard, role: str = "teacher", stage: str = "imitation") -> ShardResult:
    """Answers of an API role (the teacher; the reference model in evaluations) for the shard's rows."""
    with api_gateway(ctx, role) as (gateway, accounting):
        written = answer_part(ctx.store(), shard, gateway, stage)
    return ShardResult(part=written.part, usage=accounting.table(), failed=written.failed, final=written.final)


def judging_run_name(parameters: dict) -> str:
    """`referee-shard-07`; in an evaluation, the checkpoint's label too (`judge-base-shard-00`)."""
    shard, judging = parameters["shard"], parameters["judging"]
    label = shard.name.removeprefix("judgments").lstrip("-")
    return f"{judging.role}-{label + '-' if label else ''}shard-{shard.index:02d}"


@task(name="judgments-shard", tags=["lion", "api"], task_run_name=judging_run_name, **_API)
def judgments_shard(ctx: RunContext, shard: Shard, judging: Judging) -> ShardResult:
    """Verdicts of the referee (or the evaluation's judge), both orders, for the shard's rows."""
    with api_gateway(ctx, judging.role) as (gateway, accounting):
        written = discrimination_part(ctx.store(), shard, judging, gateway, ctx.config)
    return ShardResult(part=written.part, usage=accounting.table(), failed=written.failed, final=written.final)


@task(name="generate-instructions", tags=["lion", "api", "generator"], task_run_name="iter-{k}-generator", **_API)
def generate_instructions(ctx: RunContext, k: int, cache_pool: PoolRef, judgments: PoolRef | None) -> Candidates:
    """New instructions from hard and easy seeds, ROUGE-L filtered. Rounds depend on what the filter
    kept, so they run in one task; each round's requests go out in shard-sized chunks, each holding a
    slot of the key's limit, and a retried task re-sends nothing the response store holds."""
    with api_gateway(ctx, "generator") as (gateway, accounting):
        ref, report = generation_stage(ctx.store(), k, cache_pool, judgments, gateway, ctx.config)
    return Candidates(candidates=ref, report=report, usage=accounting.table())


@task(name="batch-pass", tags=["lion", "api", "batch"], task_run_name="iter-{work.k}-{role}-{stage}-batches",
      retries=3, retry_delay_seconds=backoff(30, 3), retry_jitter_factor=0.5, retry_condition_fn=transient,
      cache_policy=NO_CACHE, persist_result=False)
def batch_pass(ctx: RunContext, role: str, stage: str, work: BatchWork) -> BatchPassResult:
    """One look at a stage whose role is in batch mode: move its batches, save what came back, submit
    what it still needs. Never cached: every look asks the provider afresh. Holds no API slot except
    while asking interactively the requests whose batch attempts are spent (`on_exhausted: interactive`).
    For a role switched back to interactive: only moves the batches it left, submitting none."""
    cfg = ctx.config
    endpoint = role_endpoint(ctx, role)
    accounting = Accounting()
    with ResponseStore.open(cfg.storage) as responses:
        runner = batch_runner(endpoint, responses, stage, accounting,
                              budget=Budget(cfg.budget, ctx.run_id, role, responses))
        if endpoint.config.mode == "interactive":  # switched back: collect the batches already paid for
            try:
                live = runner.drive_live()
            finally:
                runner.close()
            return BatchPassResult(done=not live, batches_live=live, usage=accounting.table())
        gateway = Gateway(endpoint, responses, accounting, budget=Budget(cfg.budget, ctx.run_id, role, responses))
        interactive = SlottedGateway(gateway, limit_name(role_config(cfg, role)), cfg.orchestration.shard_size)
        try:
            look = look_at_batches(lambda gw: replay_requests(ctx.store(), work, gw, cfg, stage), endpoint, responses, runner,
                                   ask_interactively=lambda reqs: interactive.run_sync(reqs, stage))
        finally:
            runner.close()
    return look.model_copy(update={"usage": accounting.table()})
