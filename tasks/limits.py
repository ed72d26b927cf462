"""Create or update the global concurrency limits that share each API key's budget."""

from __future__ import annotations

import logging
import os
import time

from prefect import get_client, task
from prefect.exceptions import ObjectNotFound

from lion_core.config import RunConfig
from lion_core.limits import api_limits

log = logging.getLogger("lion.limits")


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
    """Create the run's API limits when missing (never change ones that exist), and give back slots
    that a killed run left behind, so a resume does not wait for them."""
    rows = apply_limits(config, update=False)
    for row in rows:
        reclaim_expired_slots(row["name"])
    return rows


SLOT_LEASE_S = 60.0
"""A slot's lease: a live holder renews it (Prefect renews at three quarters of it); the slot of a holder
that died comes back within this and the reclaim below. 60 s is the shortest the API allows."""
SLOT_WAIT_S = 30.0
"""How long one wait for a slot lasts before expired leases are looked for again."""


def reclaim_expired_slots(limit: str, settle_s: float = 1.0) -> int:
    """Give back the slots of `limit` that no live process holds; returns how many.

    A real `prefect server` does this itself (its repossessor revokes expired leases every 15 s). Our
    local API (flows.local_api) runs none of the server's services, so this does it there, from the
    leases it keeps on the file system: every expired lease is released through the API (which
    decrements its slots and deletes it), and slots counted without any lease (held when the server
    kept leases in memory and was stopped) are released too. A count is taken as orphaned only when it
    shows in two readings `settle_s` apart: a slot is counted a moment before its lease is written."""
    from pathlib import Path

    from flows.local_api import LEASES_ENV

    leases_dir = os.environ.get(LEASES_ENV)
    if not leases_dir:
        return 0
    from prefect.server.concurrency.lease_storage.filesystem import ConcurrencyLeaseStorage

    storage = ConcurrencyLeaseStorage(Path(leases_dir))

    async def leases() -> tuple[list, list]:
        expired = await storage.read_expired_lease_ids(limit=10_000)
        active = [await storage.read_lease(i) for i in await storage.read_active_lease_ids(limit=10_000)]
        return expired, [lease for lease in active if lease is not None]

    released = 0
    with get_client(sync_client=True) as client:
        expired, _ = _run(leases())
        for lease_id in expired:
            client.release_concurrency_slots_with_lease(lease_id)
            released += 1
        orphaned = []
        for reading in range(2):
            if reading:
                time.sleep(settle_s)
            limit_obj = client.read_global_concurrency_limit_by_name(limit)
            _, active = _run(leases())
            held = sum(lease.metadata.slots for lease in active if lease.metadata and limit_obj.id in lease.resource_ids)
            orphaned.append(limit_obj.active_slots - held)
        if min(orphaned) > 0:
            client.release_concurrency_slots([limit], min(orphaned), occupancy_seconds=1.0)
            released += min(orphaned)
    if released:
        log.warning("%s: %d slot(s) held by no live process were given back", limit, released)
    return released


def _run(coro):
    """Run a coroutine to its end from sync code, whether or not this thread has an event loop."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()
