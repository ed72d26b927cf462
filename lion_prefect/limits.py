"""Create or update the global concurrency limits that share each API key's budget, and the `gpu` tag's."""

from __future__ import annotations

from prefect import get_client
from prefect.exceptions import ObjectNotFound

from lion_core.config import RunConfig
from lion_core.limits import GPU_LIMIT, GPU_TAG, api_limits


def apply_limits(config: RunConfig, update: bool = True) -> list[dict]:
    """One limit per API key, sized from the config. update=False leaves existing limits as they are
    (an operator may have tuned them in the UI); `lion limits apply` updates them."""
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, GlobalConcurrencyLimitUpdate

    out = []
    with get_client(sync_client=True) as client:
        for name, spec in api_limits(config).items():
            try:
                existing = client.read_global_concurrency_limit_by_name(name)
            except ObjectNotFound:
                existing = None
            if existing is None:
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=spec["slots"]))
                action = "created"
            elif update and (existing.limit != spec["slots"] or not existing.active):
                client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(limit=spec["slots"], active=True))
                action = "updated"
            else:
                action = "kept" if update else "exists"
            out.append({"name": name, "slots": spec["slots"] if action != "exists" else existing.limit,
                        "roles": spec["roles"], "action": action})
    return out


def apply_gpu_limit(config: RunConfig) -> dict:
    """The `gpu` tag's limit: `orchestration.gpu_slots` GPU tasks at once on this Prefect server, created
    or updated (`lion limits apply`; runs never create it, so a pool nobody shares has no GPU limit)."""
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, GlobalConcurrencyLimitUpdate

    slots = config.orchestration.gpu_slots
    with get_client(sync_client=True) as client:
        try:
            existing = client.read_global_concurrency_limit_by_name(GPU_LIMIT)
        except ObjectNotFound:
            existing = None
        if existing is None:
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=GPU_LIMIT, limit=slots))
            action = "created"
        elif existing.limit != slots or not existing.active:
            client.update_global_concurrency_limit(GPU_LIMIT, GlobalConcurrencyLimitUpdate(limit=slots, active=True))
            action = "updated"
        else:
            action = "kept"
    return {"name": GPU_LIMIT, "slots": slots, "tag": GPU_TAG, "action": action}
