"""Slots of an API key's global concurrency limit, held by the requests in flight: a chunk of requests
goes out only while its task holds a slot, under a lease a dead holder cannot keep (lion_prefect.leases)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager

from prefect.concurrency.sync import concurrency

from lion_core.llm.gateway import ChatGateway
from lion_core.llm.requests import ChatRequest, ChatResult
from lion_prefect.leases import SLOT_LEASE_S, SLOT_WAIT_S, reclaim_expired_slots


class SlottedGateway:
    """A gateway whose batches go out in shard-sized chunks, each holding one slot of its API key's
    global concurrency limit (strict: a missing limit is an error, never a silent bypass).

    A failed renewal of the slot's lease only logs a warning: killing an hour of paid requests over
    one API blip costs more than a few minutes of a slot over budget, and every shard still paces
    its own requests at its share of the key's limits."""

    def __init__(self, gateway: ChatGateway, limit: str, chunk: int):
        self.gateway, self.limit, self.chunk = gateway, limit, chunk
        self.endpoint = gateway.endpoint

    def run_sync(self, requests: Sequence[ChatRequest], stage: str) -> list[ChatResult]:
        out: list[ChatResult] = []
        for i in range(0, len(requests), self.chunk):
            part = requests[i:i + self.chunk]
            with api_slot(self.limit):
                out.extend(self.gateway.run_sync(part, stage))
        return out


@contextmanager
def api_slot(limit: str) -> Iterator[None]:
    """One slot of `limit`, under a short lease that Prefect renews while we hold it. The wait is cut
    into spells (SLOT_WAIT_S); after each, slots whose holder died are given back (lion_prefect.leases), so a
    slot held by a killed run never blocks the runs after it."""
    from prefect.client.schemas.objects import ConcurrencyLeaseHolder
    from prefect.context import TaskRunContext

    task_run = TaskRunContext.get()
    # The lease names its task run, so a resume that knows the task run dead gives the slot back at once.
    holder = ConcurrencyLeaseHolder(type="task_run", id=task_run.task_run.id) if task_run else None
    with ExitStack() as held:
        while True:
            try:
                held.enter_context(concurrency(limit, occupy=1, strict=True, timeout_seconds=SLOT_WAIT_S,
                                               lease_duration=SLOT_LEASE_S, raise_on_lease_renewal_failure=False,
                                               holder=holder))
                break
            except TimeoutError:
                reclaim_expired_slots(limit)
        yield
