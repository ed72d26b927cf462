"""One event loop per process for every gateway batch, in a thread of its own.

A run answers shards in parallel threads (Prefect's thread pool); when each thread ran its batch on an
event loop of its own, four loops took turns at the GIL for every socket event, and a shard's requests
went out at about two thirds of the rate one loop reaches on the same two cores. Batches from any
thread now run as tasks of one loop; the calling thread waits without holding the GIL. Each batch
keeps the caller's context variables (Prefect's run context: its log lines stay with its task run).
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

STOP_WAIT_S = 10.0
"""How long an interrupted caller waits for its batch to stop (its workers cancelled, the answers
already received stored) before it goes on unwinding."""

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_owner_pid: int | None = None
_thread: threading.Thread | None = None


def _shared_loop() -> tuple[asyncio.AbstractEventLoop, threading.Thread]:
    global _loop, _owner_pid, _thread
    with _lock:
        # a forked child inherits the variables but not the thread: it starts a loop of its own
        if _loop is None or _owner_pid != os.getpid() or _thread is None or not _thread.is_alive():
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="lion-gateway-loop", daemon=True)
            thread.start()
            _loop, _owner_pid, _thread = loop, os.getpid(), thread
        return _loop, _thread


def run_shared(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` on the process's gateway loop and wait for its result (or exception) here. Not from
    a coroutine (as `asyncio.run`): that would wait on its own loop forever; await the coroutine there.
    An interrupted caller (ctrl-c, a task timeout) cancels the batch and waits for it to stop."""
    loop, thread = _shared_loop()
    if threading.current_thread() is thread:
        coro.close()
        raise RuntimeError("run_shared() called from the gateway loop itself: await the coroutine instead")
    context = contextvars.copy_context()
    done: concurrent.futures.Future[T] = concurrent.futures.Future()
    started: list[asyncio.Task] = []

    def start() -> None:
        if not done.set_running_or_notify_cancel():
            coro.close()
            return
        task = context.run(loop.create_task, coro)  # the task runs in the caller's context
        started.append(task)

        def finish(t: asyncio.Task) -> None:
            if t.cancelled():
                done.set_exception(concurrent.futures.CancelledError())
            elif (err := t.exception()) is not None:
                done.set_exception(err)
            else:
                done.set_result(t.result())

        task.add_done_callback(finish)

    def wait(timeout: float | None) -> T:
        deadline = None if timeout is None else loop.time() + timeout
        while True:  # in short waits: an exception sent to this thread (a stop, a task timeout) gets in
            try:
                return done.result(timeout=0.2)
            except concurrent.futures.TimeoutError:
                if not thread.is_alive():
                    raise RuntimeError("the gateway's event loop stopped") from None
                if deadline is not None and loop.time() > deadline:
                    raise

    try:
        loop.call_soon_threadsafe(start)
        return wait(None)
    except BaseException:
        if not done.done():
            loop.call_soon_threadsafe(lambda: [t.cancel() for t in started] or done.cancel())
            try:  # as asyncio.run does: the batch has stopped when the caller unwinds
                wait(STOP_WAIT_S)
            except BaseException:  # noqa: BLE001 - the first interruption is the one to raise
                pass
        raise
