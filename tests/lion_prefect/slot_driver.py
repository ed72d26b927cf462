"""Driver for tests/lion_prefect/test_slot_reclaim.py, run as its own process (its own PREFECT_HOME and API).

`hold LIMIT`: take one slot of LIMIT the way a shard does, print "held", and keep it until killed
(`hold-with-api LIMIT`: first start a local API and create LIMIT with one slot).
`scenario`: on the API of the environment (our local API when PREFECT_API_URL is unset), create a
1-slot limit, let a `hold` child take it, kill -9 the child, then time how long a new holder waits;
then count a slot with no lease (as a server that kept leases in memory leaves after a restart) and
time that wait too. Prints one JSON line.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from uuid import UUID


def hold(limit: str, own_api: bool = False) -> None:
    if own_api:  # a separate process with its own local API on the same PREFECT_HOME, as another run has
        from lion_prefect.local_api import use_local_api_unless_configured

        use_local_api_unless_configured()
        from prefect import get_client
        from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

        with get_client(sync_client=True) as client:
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=limit, limit=1))
    from lion_prefect.slots import api_slot

    with api_slot(limit):
        print("held", flush=True)
        time.sleep(3600)


def scenario() -> None:
    from lion_prefect.local_api import use_local_api_unless_configured

    ours = use_local_api_unless_configured() is not None
    from prefect import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

    import lion_prefect.slots
    from lion_prefect.slots import api_slot

    # A short spell between looks for expired leases: the lease's own 60 s is what is waited for.
    lion_prefect.slots.SLOT_WAIT_S = 3.0
    limit = "lion-api-slot-test"
    with get_client(sync_client=True) as client:
        client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=limit, limit=1))
    child = subprocess.Popen([sys.executable, __file__, "hold", limit], stdout=subprocess.PIPE, text=True,
                             env=os.environ.copy())
    assert child.stdout is not None and child.stdout.readline().strip() == "held"
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    with get_client(sync_client=True) as client:
        held_after_kill = client.read_global_concurrency_limit_by_name(limit).active_slots
    start = time.monotonic()
    with api_slot(limit):
        waited_dead_holder = time.monotonic() - start
    if not ours:
        print(json.dumps({"held_after_kill": held_after_kill, "waited_dead_holder_s": round(waited_dead_holder, 1)}))
        return
    # A lease on no limit at all (Prefect's task engine takes one for a task's tags when no tag limit
    # exists): once expired it is released, counted as no slot and worth no warning.
    import asyncio
    import logging
    from datetime import timedelta

    from prefect.server.concurrency.lease_storage.filesystem import ConcurrencyLeaseStorage

    from lion_prefect.leases import release_expired_leases

    with get_client(sync_client=True) as client:
        empty = client.increment_concurrency_slots_with_lease(["tag:no-such-limit"], 1, "concurrency", 60).json()
    storage = ConcurrencyLeaseStorage(Path(os.environ["LION_LEASES_DIR"]))
    asyncio.run(storage.renew_lease(UUID(empty["lease_id"]), timedelta(seconds=-1)))
    warnings: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: warnings.append(record.getMessage())  # type: ignore[method-assign]
    logging.getLogger("lion.limits").addHandler(handler)
    empty_counted = release_expired_leases()
    empty_left = asyncio.run(storage.read_lease(UUID(empty["lease_id"]))) is not None
    logging.getLogger("lion.limits").removeHandler(handler)
    # A slot counted with no lease at all: given back after one spell of waiting.
    with get_client(sync_client=True) as client:
        client.increment_concurrency_slots([limit], 1, "concurrency")
        counted = client.read_global_concurrency_limit_by_name(limit).active_slots
    start = time.monotonic()
    with api_slot(limit):
        waited_leaseless = time.monotonic() - start
    with get_client(sync_client=True) as client:
        left = client.read_global_concurrency_limit_by_name(limit).active_slots
    print(json.dumps({"held_after_kill": held_after_kill, "waited_dead_holder_s": round(waited_dead_holder, 1),
                      "counted_leaseless": counted, "waited_leaseless_s": round(waited_leaseless, 1),
                      "active_at_end": left, "empty_lease": {"resources": empty["limits"], "counted": empty_counted,
                                                             "left": empty_left, "warnings": warnings}}), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "scenario":
        scenario()
    else:
        hold(sys.argv[2], own_api=sys.argv[1] == "hold-with-api")
