"""Fan-out helpers shared by the sub-flows: shard a pool, run a task per shard, show progress; a whole
pool answered or judged that way (the stages and evaluations share them)."""

from __future__ import annotations

import time

from prefect import Task, get_run_logger
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.futures import as_completed

from lion_core.limits import role_config
from lion_core.llm.batches import live_batch_count
from lion_core.results import BatchWork, Judging, Shard, ShardResult, UsageRow, merge_usage
from lion_core.shards import check_stage_failures, shard_bounds, too_many_failed
from lion_core.store import PoolRef
from tasks.api import answers_shard, batch_pass, judgments_shard
from tasks.common import RunContext, backoff, configured
from tasks.pools import merge_parts


def shards_of(k: int, name: str, pool: PoolRef, shard_size: int) -> list[Shard]:
    """The pool's rows in shards of at most `shard_size`, as parts of iteration k's `name`."""
    return [Shard(k=k, name=name, pool=pool, index=i, lo=lo, hi=hi)
            for i, (lo, hi) in enumerate(shard_bounds(pool.rows, shard_size))]


def run_shards(task_obj: Task, ctx: RunContext, label: str, shards: list[Shard], **common: object) -> list[ShardResult]:
    """Submit `task_obj(ctx, shard, **common)` for every shard and wait for all; a progress artifact
    follows the shards as they end. Every shard runs to its end before a failure is raised, so a
    retry has the least left to do. Then the stage's failures are settled (`settle_failures`)."""
    task_obj = configured(task_obj, ctx.config)
    progress = create_progress_artifact(0.0, description=f"{label}: 0 of {len(shards)} shards") if shards else None
    futures = [task_obj.submit(ctx=ctx, shard=shard, **common) for shard in shards]
    for done, _ in enumerate(as_completed(futures), start=1):
        update_progress_artifact(progress, 100.0 * done / len(shards), description=f"{label}: {done} of {len(shards)} shards")
    return settle_failures(task_obj, ctx, label, shards, [f.result() for f in futures], common)


def settle_failures(task_obj: Task, ctx: RunContext, label: str, shards: list[Shard], results: list[ShardResult],
                    common: dict[str, object]) -> list[ShardResult]:
    """Judge the stage's failed items together against `max_failed_fraction`. Over it, the shards with
    failures worth sending again run again (their answered requests come from the response store), up
    to `task_retries` times with the task's retry delays; still over it, the run stops with
    StageIncomplete and a resume sends only the failed requests. A shard's task result is cached with
    its failures, so these passes refresh its cache; with `retry_failed`, every shard with a failure
    runs again first, its requests given up for good included."""
    o = ctx.config.orchestration
    total = sum(s.hi - s.lo for s in shards)
    results = list(results)
    rerun = task_obj.with_options(refresh_cache=True)

    def again(indices: list[int]) -> None:
        futures = {i: rerun.submit(ctx=ctx, shard=shards[i], **common) for i in indices}
        for i, future in futures.items():
            results[i] = future.result()

    if ctx.retry_failed:
        again([i for i, r in enumerate(results) if r.failed])
    for delay in backoff(o.retry_delay_s, o.task_retries):
        failed = sum(r.failed for r in results)
        retryable = [i for i, r in enumerate(results) if r.failed > r.final]
        if not too_many_failed(failed, total, o.max_failed_fraction) or not retryable:
            break
        get_run_logger().warning("%s: %d of %d items failed (allowed: %.0f%%); sending the failed requests of %d "
                                 "shard(s) again in %.0f s", label, failed, total, 100 * o.max_failed_fraction,
                                 len(retryable), delay)
        time.sleep(delay)
        again(retryable)
    check_stage_failures(sum(r.failed for r in results), total, o.max_failed_fraction,
                         f"iteration {shards[0].k} {label}" if shards else label, final=sum(r.final for r in results))
    return results


def answer_pool(ctx: RunContext, k: int, name: str, pool: PoolRef, role: str = "teacher",
                stage: str = "imitation") -> tuple[PoolRef, list[UsageRow]]:
    """An API role's answers for a whole pool: shards of `orchestration.shard_size` rows, merged and committed."""
    batched = through_batches(ctx, role, stage, BatchWork(kind="answers", k=k, pool=pool))
    shards = shards_of(k, name, pool, ctx.config.orchestration.shard_size)
    results = run_shards(answers_shard, ctx, name, shards, role=role, stage=stage)
    ref = merge_parts(ctx, k, name, [r.part for r in results], [pool])
    return ref, merge_usage([batched, *(r.usage for r in results)])


def judge_pool(ctx: RunContext, k: int, name: str, pool: PoolRef, judging: Judging,
               label: str) -> tuple[PoolRef, list[UsageRow]]:
    """The judging role's verdicts on a whole pool (both answers per item, in both orders): shards of
    `orchestration.shard_size` rows, merged and committed as iteration k's `name`."""
    batched = through_batches(ctx, judging.role, "discrimination", BatchWork(kind="judgments", k=k, pool=pool,
                                                                             judging=judging))
    results = run_shards(judgments_shard, ctx, label, shards_of(k, name, pool, ctx.config.orchestration.shard_size),
                         judging=judging)
    ref = merge_parts(ctx, k, name, [r.part for r in results], [pool, judging.teacher, judging.student])
    return ref, merge_usage([batched, *(r.usage for r in results)])


def through_batches(ctx: RunContext, role: str, stage: str, work: BatchWork) -> list[UsageRow]:
    """For a role in batch mode: look at the stage's batches every `batch.poll_interval_s` until the
    response store holds every answer the stage needs, so its tasks then only read. Between looks the
    flow sleeps and holds no slot, thread or GPU; a run stopped here resumes with the same batches. The
    UI's progress artifact shows answered, failed and pending. A role switched back to interactive first
    waits for the batches it left (they are paid for; their answers are not asked again). Other roles:
    nothing to do."""
    settings = role_config(ctx.config, role)
    if not work.pool.rows:
        return []
    if settings.mode != "batch" and settings.base_url == "embedded":
        return []
    if settings.mode != "batch" and not live_batch_count(ctx.config.storage, settings.base_url,
                                                         settings.model):
        return []
    label = f"iteration {work.k} {role} {stage} batches"
    progress = create_progress_artifact(0.0, description=f"{label}: starting")
    looks = []
    look_task = configured(batch_pass, ctx.config)
    while True:
        look = look_task(ctx, role=role, stage=stage, work=work)
        looks.append(look.usage)
        if look.done:
            update_progress_artifact(progress, 100.0, description=f"{label}: done")
            return merge_usage(looks)
        share = 100.0 * (look.answered + look.failed) / look.total if look.total else 0.0
        update_progress_artifact(progress, share, description=(
            f"{label}: {look.answered} answered, {look.failed} failed, {look.pending} pending of {look.total} "
            f"in this round; {look.batches_live} batches in progress"))
        time.sleep(settings.batch.poll_interval_s)
