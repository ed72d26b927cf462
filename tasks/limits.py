"""The task that makes sure a run's API limits exist before its shards wait on them."""

from __future__ import annotations

from prefect import task

from lion_core.config import RunConfig
from lion_prefect.leases import reclaim_expired_slots
from lion_prefect.limits import apply_limits


@task(name="ensure-limits", tags=["lion"], retries=2, retry_delay_seconds=5)
def ensure_limits(config: RunConfig) -> list[dict]:
    """Create the run's API limits when missing (never change ones that exist), and give back slots
    that a killed run left behind, so a resume does not wait for them."""
    rows = apply_limits(config, update=False)
    for row in rows:
        reclaim_expired_slots(row["name"])
    return rows
