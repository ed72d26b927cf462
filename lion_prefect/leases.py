"""Slot leases of the global concurrency limits, and the reclaim of slots whose holder died.

Prefect is imported inside the functions only: lion_prefect.local_api imports this module, and runs
before Prefect may read its settings (it sets PREFECT_API_URL).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator
from datetime import datetime, timezone

# The name the warnings have always been logged under: log filters and the tests look for it.
log = logging.getLogger("lion.limits")

LEASES_ENV = "LION_LEASES_DIR"
"""Set while our local API runs (to where its leases are, for the user): the reclaim below then runs."""
SLOT_LEASE_S = 60.0
"""A slot's lease: a live holder renews it (Prefect renews at three quarters of it); the slot of a holder
that died comes back within this and the reclaim below. 60 s is the shortest the API allows."""
SLOT_WAIT_S = 30.0
"""How long one wait for a slot lasts before expired leases are looked for again."""


def _lease_storage():
    """Our local API's leases (lion_prefect.local_api), or None when the API is another server. The folder
    is found as the server finds it (Prefect's settings: PREFECT_HOME, profiles, prefect.toml)."""
    if not os.environ.get(LEASES_ENV):
        return None
    from prefect.server.concurrency.lease_storage.filesystem import ConcurrencyLeaseStorage

    return ConcurrencyLeaseStorage()


@contextlib.contextmanager
def _reclaim_lock(storage) -> Iterator[None]:
    """One reclaimer at a time across processes: the API's release of a lease reads it, decrements its
    slots, then deletes it, so two processes releasing one lease at once would decrement twice."""
    import fcntl

    storage.storage_path.mkdir(parents=True, exist_ok=True)
    with open(storage.storage_path / ".lion-reclaim.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def release_expired_leases() -> int:
    """Release every expired lease of our local API (what a real server's repossessor service does
    every 15 s): the API decrements its slots and deletes it. Returns how many held slots."""
    from prefect import get_client

    storage = _lease_storage()
    if storage is None:
        return 0

    async def still_expired() -> list:
        now = datetime.now(timezone.utc)
        leases = [await storage.read_lease(i) for i in await storage.read_expired_lease_ids(limit=10_000)]
        return [lease for lease in leases if lease is not None and lease.expiration < now]  # not renewed since

    with _reclaim_lock(storage), get_client(sync_client=True) as client:
        expired = _run(still_expired())
        for lease in expired:
            client.release_concurrency_slots_with_lease(lease.id)
    # Prefect's task engine also takes a lease for a task's tags when no tag limit exists, holding no
    # slot, and does not always give it back: releasing one of those frees nothing, so only leases
    # that held slots are worth a warning.
    held = [lease for lease in expired if lease.resource_ids and (lease.metadata is None or lease.metadata.slots)]
    if held:
        log.warning("%d expired slot lease(s) released: their holders died without giving them back", len(held))
    return len(held)


def release_leases_held_by(task_runs: set) -> int:
    """Release the slot leases of our local API that these (dead) task runs hold; returns how many. A real
    server's leases are released by its repossessor when they expire."""
    from prefect import get_client

    storage = _lease_storage()
    if storage is None:
        return 0

    async def held() -> list:
        leases = [await storage.read_lease(i) for i in await storage.read_active_lease_ids(limit=10_000)]
        return [lease.id for lease in leases
                if lease is not None and lease.metadata and lease.metadata.holder
                and lease.metadata.holder.id in task_runs]

    with _reclaim_lock(storage), get_client(sync_client=True) as client:
        ids = _run(held())
        for lease_id in ids:
            client.release_concurrency_slots_with_lease(lease_id)
    if ids:
        log.warning("%d slot lease(s) of a dead attempt released", len(ids))
    return len(ids)


def reclaim_expired_slots(limit: str, settle_s: float = 1.0) -> int:
    """Give back the slots of `limit` that no live process holds; returns how many.

    A real `prefect server` does this itself (its repossessor revokes expired leases every 15 s). On our
    local API (lion_prefect.local_api, leases on the file system) every expired lease is released, and slots
    counted without any lease (left by a server that kept leases in memory and was stopped) are
    released too. A count is taken as orphaned only when it shows in two readings `settle_s` apart: a
    slot is counted a moment before its lease is written."""
    from prefect import get_client

    storage = _lease_storage()
    if storage is None:
        return 0
    released = release_expired_leases()

    async def all_leases() -> list:
        # expired ones too: they are released through their lease (above, or by the next turn), never as orphans
        ids = await storage.read_active_lease_ids(limit=10_000) + await storage.read_expired_lease_ids(limit=10_000)
        leases = [await storage.read_lease(i) for i in ids]
        return [lease for lease in leases if lease is not None]

    with _reclaim_lock(storage), get_client(sync_client=True) as client:
        orphaned = []
        for reading in range(2):
            if reading:
                time.sleep(settle_s)
            limit_obj = client.read_global_concurrency_limit_by_name(limit)
            leases = _run(all_leases())
            held = sum(lease.metadata.slots for lease in leases if lease.metadata and limit_obj.id in lease.resource_ids)
            orphaned.append(limit_obj.active_slots - held)
        if min(orphaned) > 0:
            client.release_concurrency_slots([limit], min(orphaned), occupancy_seconds=1.0)
            released += min(orphaned)
            log.warning("%s: %d slot(s) counted with no lease were given back", limit, min(orphaned))
    return released


def _run(coro):
    """Run a coroutine to its end from sync code, whether or not this thread has an event loop."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()
