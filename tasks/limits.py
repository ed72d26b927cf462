"""Create or update the global concurrency limits that share each API key's budget."""

from __future__ import annotations

from prefect import get_client, task
from prefect.exceptions import ObjectNotFound

from lion_core.config import RunConfig
from lion_core.limits import api_limits


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


@task(name="ensure-limits", tags=["lion"], retries=2, retry_delay_seconds=5)
def ensure_limits(config: RunConfig) -> list[dict]:
    """Create the run's API limits when missing; never change ones that exist."""
    return apply_limits(config, update=False)
