"""What every Lion task shares: the run context it receives, cache keys, the retry rule, API gateways.

Cache keys are built from what a task's output depends on: the run (its id and creation time, so a
deleted and re-created run never reuses old results, and a moved one still does), the config hash (the
run's identity, not its operations settings), files of the run by `run://` reference, the content hashes of
the input artifacts; never the flow-run id. So a retry of a run, a new deployment run with the same run
id, or `lion run --resume` skips every task that completed, and the response store skips every
request that was answered.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pydantic import BaseModel, ConfigDict

from lion_core.config import RunConfig
from lion_core.errors import LionError, ShardIncomplete, StageIncomplete
from lion_core.limits import limit_name, role_config, shard_role
from lion_core.llm.accounting import Accounting
from lion_core.llm.budget import Budget
from lion_core.llm.gateway import ChatGateway, Endpoint, EndpointUnreachable, Gateway
from lion_core.llm.replay import StoreGateway, batch_runner
from lion_core.llm.responses import ResponseStore
from lion_core.store import PoolRef, RunStore
from lion_core.student.launch import TrainingError
from lion_prefect.slots import SlottedGateway

CACHE_VERSION = "lion-tasks/5"
"""Bump when a task's output format changes, so old cached results are not reused (2: judgments/2,
checkpoint records, cards; 3: the config hash covers the run's identity only; 4: typed results; 5: usage rows
carry their mode)."""


class RunContext(BaseModel):
    """The small, hashable description of a run that every task receives."""

    model_config = ConfigDict(frozen=True)

    config: RunConfig
    run_id: str
    run_key: str
    """The run id and creation time: identifies this run in cache keys, wherever its folder is."""
    embedded: dict[str, tuple[str, str]] | None = None
    """{embedded model: (base URL, served model)} of this flow run's embedded servers; never part of a cache key."""
    store_root: str | None = None
    """Where the run folder lives, when not under storage.runs_root (evaluations)."""
    retry_failed: bool = False
    """Send again the requests recorded as failed for good (their unusable-reply budget spent), with
    as many more tries (`lion run --retry-failed`); never part of a cache key."""

    def store(self) -> RunStore:
        return RunStore(self.store_root or self.config.storage.runs_root, self.run_id, self.config)


def _canonical(value: Any) -> Any:
    if isinstance(value, RunContext):
        return {"run": value.run_key, "config": value.config.config_hash()}
    if isinstance(value, PoolRef):
        return {"sha256": value.sha256, "rows": value.rows}
    if isinstance(value, BaseModel):  # field by field, so a PoolRef inside counts by its hash
        return {name: _canonical(getattr(value, name)) for name in sorted(type(value).model_fields)}
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in sorted(value.items())}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise TypeError(f"task inputs must be references or scalars, not {type(value).__name__}")


def input_cache_key(context: Any, parameters: dict[str, Any]) -> str:
    """Task name + canonical inputs (artifact hashes, config hash, run identity, scalars)."""
    body = json.dumps({"v": CACHE_VERSION, "task": context.task.name, "inputs": _canonical(parameters)},
                      sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()


def transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry on what may pass: network and storage hiccups, an incomplete shard, a crashed fine-tune.
    Never on a bad config, a rejected API key or corrupt data: those fail the same way again."""
    try:
        state.result()
    except (ShardIncomplete, StageIncomplete, EndpointUnreachable, TrainingError):
        return True
    except LionError:
        return False
    except Exception:  # noqa: BLE001 - anything not ours is assumed transient
        return True
    return True


def role_endpoint(ctx: RunContext, role: str) -> Endpoint:
    """The role's endpoint with the shard's share of the key's rate limits."""
    cfg = ctx.config
    role_cfg = shard_role(role_config(cfg, role), cfg.orchestration.shards_in_flight_per_key)
    embedded = ctx.embedded if role_cfg.base_url == "embedded" else None
    return Endpoint.from_config(role, role_cfg, embedded=embedded)


@contextmanager
def api_gateway(ctx: RunContext, role: str) -> Iterator[tuple[ChatGateway, Accounting]]:
    """The role's gateway for one task: the shard's share of the key's rate limits, the run's response
    store, and a fresh accounting table that the task returns. A role in batch mode reads the answers
    its batches left in the store (the flow's batch passes come first) and sends nothing."""
    cfg = ctx.config
    endpoint = role_endpoint(ctx, role)
    accounting = Accounting()
    with ResponseStore.open(cfg.storage) as responses:
        if endpoint.config.mode == "batch":
            runner = batch_runner(endpoint, responses, "read")
            try:
                yield StoreGateway(endpoint, responses, runner.settled, accounting), accounting
            finally:
                runner.close()
            return
        gateway = Gateway(endpoint, responses, accounting, budget=Budget(cfg.budget, ctx.run_id, role, responses))
        yield SlottedGateway(gateway, limit_name(role_config(cfg, role)), cfg.orchestration.shard_size), accounting


def backoff(first_delay_s: float, retries: int) -> list[float]:
    """Exponential delays between task retries (jittered by Prefect's retry_jitter_factor)."""
    return [first_delay_s * 2 ** i for i in range(retries)]


def configured(task_obj: Any, cfg: RunConfig) -> Any:
    """The task with the run's retry settings."""
    o = cfg.orchestration
    return task_obj.with_options(retries=o.task_retries, retry_delay_seconds=backoff(o.retry_delay_s, o.task_retries),
                                 retry_jitter_factor=0.5)
