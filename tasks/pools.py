"""Store tasks: start or reopen a run, merge shard parts into a committed artifact, update the pools."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task

from lion_core import stages
from lion_core.errors import ConfigError
from lion_core.preflight import preflight_problems
from lion_core.runs import check_resume, init_run
from lion_core.store import PoolRef, RunStore
from tasks.common import RunContext, input_cache_key, transient

_STORE = dict(retries=2, retry_delay_seconds=5, retry_condition_fn=transient)


@task(name="open-run", tags=["lion", "store"], **_STORE)
def open_run(config: Any, run_id: str, seed: str | None = None) -> dict[str, Any]:
    """Create iteration 0 from the seeds, or reopen the run when it exists (resume)."""
    store = RunStore(config.storage.runs_root, run_id, config)
    checked = config if seed is None else config.model_copy(update={"data": config.data.model_copy(update={"seed": seed})})
    if problems := preflight_problems(checked, new_run=not store.exists()):  # before anything is paid
        raise ConfigError(f"run {run_id!r} cannot start; {len(problems)} problem(s):\n"
                          + "\n".join(f"  - {p}" for p in problems))
    if not store.exists():
        init_run(config, seed_source=seed, run_id=run_id)
    changed = check_resume(store, config)
    if changed:
        get_run_logger().info("run %s resumes with changed operations settings: %s", run_id,
                              "; ".join(f"{path} {old!r} -> {new!r}" for path, old, new in changed))
    info = store.read_run_info()
    return {"run_uri": store.run_uri, "created_at": info["created_at"],
            "changed": [[path, old, new] for path, old, new in changed]}


@task(name="merge-parts", tags=["lion", "store"], cache_key_fn=input_cache_key, persist_result=True, **_STORE)
def merge_parts(ctx: RunContext, k: int, name: str, parts: list[PoolRef], parents: list[PoolRef]) -> PoolRef:
    """Commit the shard parts, in row order, as iteration k's `name`."""
    if name.startswith("judgments"):
        schema, version = stages.JUDGMENTS_SCHEMA, stages.JUDGMENTS_SCHEMA_VERSION
    else:
        schema, version = stages.ANSWERS_SCHEMA, stages.ANSWERS_SCHEMA_VERSION
    return stages.merge_parts(ctx.store(), k, name, parts, schema, version, parents)


@task(name="update-pools", tags=["lion", "store"], cache_key_fn=input_cache_key, persist_result=True, **_STORE)
def update_pools(ctx: RunContext, k: int, cache_pool: PoolRef, candidates: PoolRef) -> dict[str, PoolRef]:
    """Iteration k+1's Train and Cache Pools, committed together in one manifest write."""
    store = ctx.store()
    rows = stages.accepted_rows(candidates, k + 1)
    train, cache = stages.update_pools(store, k, cache_pool, rows, candidates)
    return {"train_pool": train, "cache_pool": cache}


@task(name="training-set", tags=["lion", "store"], cache_key_fn=input_cache_key, persist_result=True, **_STORE)
def training_set(ctx: RunContext, k: int, answers: PoolRef, base_model: str, previous_checkpoint: str | None) -> dict[str, Any]:
    """What iteration k's fine-tune starts from and trains on (see `training.init_from`)."""
    start, data = stages.imitation_inputs(ctx.store(), k, ctx.config, base_model, previous_checkpoint)
    return {"start_from": start, "answers": data}
