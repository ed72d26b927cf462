"""A gateway batch's traffic with the response store: requests claimed a handful at a time, answers written
in groups, so that a store on a PostgreSQL server keeps up with a fan-out of hundreds of requests a second.

Claims are taken in chunks (one statement for the chunk, then one read of what the store already holds
of those keys), and each answer is written as soon as the writer is free: while one write is at the
server, the answers that arrive meanwhile wait and go together in the next (group commit). A caller's
`write` returns once its row is stored, so an answer is never held back by more than the write before it,
and a crash still loses only the requests in flight. Claims taken and not used are given back at `close`.

On PostgreSQL the store's calls run on a thread of their own, so that the batch's requests go on while
one waits for the server; a SQLite call is quicker than that hand-over and runs in place.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from lion_core.llm.requests import ChatRequest, ChatResult
from lion_core.llm.responses import Previous, ResponseStore, StoredCall, Write

T = TypeVar("T")
log = logging.getLogger("lion")
CLAIM_POLL_S = 1.0
"""How often a request another worker has in flight is looked at again."""


class StoreLane:
    def __init__(self, store: ResponseStore, holder: str, todo: asyncio.Queue[str], chunk: int):
        self.store, self.holder, self._todo, self._chunk = store, holder, todo, max(1, chunk)
        self._thread = ThreadPoolExecutor(1, "lion-store") if getattr(store, "dialect", "") == "postgresql" else None
        self._ready: deque[tuple[str, ChatResult | None, Previous, bool]] = deque()
        self._elsewhere: dict[str, float] = {}  # key -> when to look again (claimed by another worker)
        self._tried_before: dict[str, int] = {}  # key claimed elsewhere -> its attempts when first found so
        self._refill = asyncio.Lock()
        self._writes: list[tuple[Write, asyncio.Future]] = []
        self._writer: asyncio.Future | None = None

    async def call(self, method: Callable[..., T], *args: Any) -> T:
        if self._thread is None:
            return method(*args)
        return await asyncio.get_running_loop().run_in_executor(self._thread, method, *args)

    # -- claims -----------------------------------------------------------------------------------------
    async def take(self, stopped: Callable[[], bool]) -> tuple[str, ChatResult | None, Previous, bool] | None:
        """The next request this batch holds: (key, its stored answer if another worker gave one since the
        batch looked, what the store holds of its earlier tries, whether another worker tried it and gave up
        while this batch waited for it: not to be sent again in this pass). None when none are left."""
        while not stopped():
            if self._ready:
                return self._ready.popleft()
            async with self._refill:
                if self._ready:
                    continue
                now = time.monotonic()
                keys = [k for k, at in self._elsewhere.items() if at <= now][: self._chunk]
                waited = set(keys)
                for k in keys:
                    del self._elsewhere[k]
                while len(keys) < self._chunk and not self._todo.empty():
                    keys.append(self._todo.get_nowait())
                if not keys:
                    if not self._elsewhere:
                        return None
                    await asyncio.sleep(max(0.0, min(self._elsewhere.values()) - now))
                    continue
                won = await self.call(self.store.claim_many, keys, self.holder)
                known = await self.call(self.store.lookup_many, won) if won else {}
                lost = [k for k in keys if k not in won and k not in self._tried_before]
                if lost:  # what the store held of them before the other worker's tries
                    before = await self.call(self.store.lookup_many, lost)
                    self._tried_before.update({k: before.get(k, (None, (0,)))[1][0] for k in lost})
                again = time.monotonic() + min(CLAIM_POLL_S, self.store.lease_s / 4)
                for k in keys:
                    if k in won:
                        found, previous = known.get(k, (None, (0, 0, None, None)))
                        gave_up = k in waited and previous[0] > self._tried_before.get(k, previous[0])
                        self._ready.append((k, found, previous, gave_up))
                    else:  # in flight elsewhere: waited for, not paid again
                        self._elsewhere[k] = again
        return None

    def held(self) -> int:
        """Requests claimed by this batch and not yet handed to a worker."""
        return len(self._ready)

    def waiting(self) -> list[str]:
        """Keys claimed by other workers, not yet answered as far as this batch knows."""
        return list(self._elsewhere)

    async def release(self, key: str) -> None:
        await self.call(self.store.release, key, self.holder)

    async def renew(self) -> None:
        await self.call(self.store.renew, self.holder)

    # -- writes -----------------------------------------------------------------------------------------
    async def write(self, kind: str, call: StoredCall, request: ChatRequest, result: ChatResult,
                    latency_s: float | None = None, release: bool = True) -> None:
        """Store an answer ('ok') or a failure ('failed'), giving back the request's claim with it when
        `release`; returns once the row is stored."""
        done: asyncio.Future = asyncio.get_running_loop().create_future()
        self._writes.append((Write(kind, call, request, result, latency_s, release), done))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.ensure_future(self._write_all())
        await done

    async def _write_all(self) -> None:
        while self._writes:
            group, self._writes = self._writes, []
            try:
                await self.call(self.store.write_many, [w for w, _ in group], self.holder)
            except Exception as err:  # noqa: BLE001 - one row the database refuses must not cost the others
                if len(group) == 1:
                    group[0][1].done() or group[0][1].set_exception(err)
                    continue
                for write, done in group:  # each on its own: only the rows the database refuses fail
                    try:
                        await self.call(self.store.write_many, [write], self.holder)
                    except Exception as one:  # noqa: BLE001 - its writer learns of it
                        done.done() or done.set_exception(one)
                    else:
                        done.done() or done.set_result(None)
                continue
            for _, done in group:
                if not done.done():
                    done.set_result(None)

    async def close(self) -> None:
        """Give back every claim still held (requests claimed but not sent: the batch stopped)."""
        try:
            if self._writer is not None:  # shielded: a second cancel must not drop answers already paid for
                await asyncio.gather(asyncio.shield(self._writer), return_exceptions=True)
            await self.call(self.store.release_all, self.holder)
        except Exception as err:  # noqa: BLE001 - the store is failing: the batch's own error says why; the claims expire
            log.warning("claims of %s not given back (%s: %s); they expire after %.0f s", self.holder,
                        type(err).__name__, err, self.store.lease_s)
        finally:
            if self._thread is not None:
                self._thread.shutdown(wait=True)
