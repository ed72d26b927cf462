"""Store tasks: start or reopen a run, merge shard parts into a committed artifact, update the pools."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from lion_core import merge, runs
from lion_core.config import RunConfig
from lion_core.generation.stage import accepted_rows
from lion_core.generation.stage import update_pools as update_pool_files
from lion_core.imitation.training_set import imitation_inputs
from lion_core.llm.responses import ResponseStore
from lion_core.results import OpenedRun, Pools, TrainingInputs
from lion_core.store import PoolRef
from tasks.common import RunContext, input_cache_key, transient

_STORE = dict(retries=2, retry_delay_seconds=5, retry_condition_fn=transient)


@task(name="open-run", tags=["lion", "store"], task_run_name="open-{run_id}", **_STORE)
def open_run(config: RunConfig, run_id: str, seed: str | None = None) -> OpenedRun:
    """Create iteration 0 from the seeds, or reopen the run when it exists (resume)."""
    opened = runs.open_run(config, run_id, seed)
    if opened.changed:
        get_run_logger().info("run %s resumes with changed operations settings: %s", run_id,
                              "; ".join(f"{path} {old!r} -> {new!r}" for path, old, new in opened.changed))
    return opened


@task(name="grant-unusable-again", tags=["lion", "store"], cache_policy=NO_CACHE, **_STORE)
def grant_unusable_again(config: RunConfig) -> int:
    """`--retry-failed`: the requests given up for their unusable replies get a fresh budget of them."""
    with ResponseStore.open(config.storage) as responses:
        return responses.grant_unusable_again()


@task(name="merge-parts", tags=["lion", "store"], task_run_name="iter-{k}-merge-{name}", cache_key_fn=input_cache_key,
      persist_result=True, **_STORE)
def merge_parts(ctx: RunContext, k: int, name: str, parts: list[PoolRef], parents: list[PoolRef]) -> PoolRef:
    """Commit the shard parts, in row order, as iteration k's `name`."""
    return merge.merge_parts(ctx.store(), k, name, parts, parents)


@task(name="update-pools", tags=["lion", "store"], task_run_name="iter-{k}-update-pools", cache_key_fn=input_cache_key,
      persist_result=True, **_STORE)
def update_pools(ctx: RunContext, k: int, cache_pool: PoolRef, candidates: PoolRef) -> Pools:
    """Iteration k+1's Train and Cache Pools, committed together in one manifest write."""
    return update_pool_files(ctx.store(), k, cache_pool, accepted_rows(ctx.store(), candidates, k + 1), candidates)


@task(name="training-set", tags=["lion", "store"], task_run_name="iter-{k}-training-set", cache_key_fn=input_cache_key,
      persist_result=True, **_STORE)
def training_set(ctx: RunContext, k: int, answers: PoolRef, base_model: str, previous_checkpoint: str | None) -> TrainingInputs:
    """What iteration k's fine-tune starts from and trains on (see `training.init_from`)."""
    return imitation_inputs(ctx.store(), k, ctx.config, base_model, previous_checkpoint)
