"""One event loop per process for every gateway batch, in a thread of its own.

A run answers shards in parallel threads (Prefect's thread pool); when each thread ran its batch on an
event loop of its own, four loops took turns at the GIL for every socket event, and a shard's requests
went out at about half the rate one loop reaches on the same two cores. Batches from any thread now run
as tasks of one loop; the calling thread waits without holding the GIL. Each batch keeps the caller's
context variables (Prefect's run context: its log lines stay with its task run).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import os
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_owner_pid: int | None = None
_thread: threading.Thread | None = None


def _shared_loop() -> asyncio.AbstractEventLoop:
    global _loop, _owner_pid, _thread
    with _lock:
        # a forked child inherits the variables but not the thread: it starts a loop of its own
        if _loop is None or _owner_pid != os.getpid() or _thread is None or not _thread.is_alive():
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="lion-gateway-loop", daemon=True)
            thread.start()
            _loop, _owner_pid, _thread = loop, os.getpid(), thread
        return _loop


def run_shared(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` on the process's gateway loop and wait for its result (or exception) here. Not from
    a coroutine (as `asyncio.run`): that would wait on its own loop forever; await the coroutine there."""
    loop = _shared_loop()
    if threading.current_thread() is _thread:
        coro.close()
        raise RuntimeError("run_shared() called from the gateway loop itself: await the coroutine instead")
    context = contextvars.copy_context()
    done: concurrent.futures.Future[T] = concurrent.futures.Future()
    started: list[asyncio.Task] = []

    def start() -> None:
        if not done.set_running_or_notify_cancel():
            coro.close()
            return
        task = loop.create_task(coro, context=context)
        started.append(task)

        def finish(t: asyncio.Task) -> None:
            if t.cancelled():
                done.cancel()
            elif (err := t.exception()) is not None:
                done.set_exception(err)
            else:
                done.set_result(t.result())

        task.add_done_callback(finish)

    loop.call_soon_threadsafe(start)
    try:
        while True:  # in short waits: an exception sent to this thread (a stop, a task timeout) gets in
            try:
                return done.result(timeout=0.2)
            except concurrent.futures.TimeoutError:
                continue
    except BaseException:
        # the caller was interrupted (KeyboardInterrupt, a stop): the batch stops too, as with asyncio.run
        if not done.done():
            loop.call_soon_threadsafe(lambda: [t.cancel() for t in started])
        raise
