"""Fan-out helpers shared by the sub-flows: shard a pool, run a task per shard, show progress."""

from __future__ import annotations

from typing import Any

from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.futures import as_completed

from lion_core.report import merge_usage
from lion_core.stages import shard_bounds
from lion_core.store import PoolRef
from tasks.api import answers_shard
from tasks.common import RunContext, configured
from tasks.pools import merge_parts


def run_shards(task_obj: Any, ctx: RunContext, label: str, calls: list[dict[str, Any]]) -> list[Any]:
    """Submit one task per shard and wait for all; a progress artifact follows the shards as they end.
    Every shard runs to its end before a failure is raised, so a retry has the least left to do."""
    task_obj = configured(task_obj, ctx.config)
    progress = create_progress_artifact(0.0, description=f"{label}: 0 of {len(calls)} shards") if calls else None
    futures = [task_obj.submit(ctx=ctx, **kw) for kw in calls]
    for done, _ in enumerate(as_completed(futures), start=1):
        update_progress_artifact(progress, 100.0 * done / len(calls), description=f"{label}: {done} of {len(calls)} shards")
    return [f.result() for f in futures]


def answer_pool(ctx: RunContext, k: int, name: str, pool: PoolRef, role: str = "teacher",
                stage: str = "imitation") -> tuple[PoolRef, list[dict[str, Any]]]:
    """An API role's answers for a whole pool: shards of `orchestration.shard_size` rows, merged and committed."""
    bounds = shard_bounds(pool.rows, ctx.config.orchestration.shard_size)
    results = run_shards(answers_shard, ctx, f"{name}",
                         [{"k": k, "name": name, "pool": pool, "lo": lo, "hi": hi, "role": role, "stage": stage}
                          for lo, hi in bounds])
    ref = merge_parts(ctx, k, name, [r["part"] for r in results], [pool])
    return ref, merge_usage(r["usage"] for r in results)
