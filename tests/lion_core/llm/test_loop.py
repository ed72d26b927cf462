"""Gateway batches from many threads run on one event loop, each with its caller's context."""

import asyncio
import contextvars
import threading
import time

import pytest

from lion_core.llm.loop import run_shared

who = contextvars.ContextVar("who", default="nobody")


async def _report(delay: float) -> tuple[str, str, int]:
    await asyncio.sleep(delay)
    return who.get(), threading.current_thread().name, id(asyncio.get_running_loop())


def test_batches_from_several_threads_share_one_loop_and_keep_their_callers_context():
    results: dict[str, tuple] = {}

    def caller(name: str) -> None:
        who.set(name)
        results[name] = run_shared(_report(0.2))

    threads = [threading.Thread(target=caller, args=(f"shard-{i}",)) for i in range(4)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert time.monotonic() - start < 0.8  # concurrent on the loop, not one after another
    assert {name: r[0] for name, r in results.items()} == {f"shard-{i}": f"shard-{i}" for i in range(4)}
    assert {r[1] for r in results.values()} == {"lion-gateway-loop"}
    assert len({r[2] for r in results.values()}) == 1


def test_an_exception_reaches_the_caller():
    async def fail() -> None:
        raise ValueError("broken batch")

    with pytest.raises(ValueError, match="broken batch"):
        run_shared(fail())


def test_a_batch_started_from_a_coroutine_on_the_loop_is_an_error_not_a_hang():
    async def inner() -> int:
        return 7

    async def nested() -> int:
        return run_shared(inner())

    with pytest.raises(RuntimeError, match="await the coroutine instead"):
        run_shared(nested())
    assert run_shared(inner()) == 7  # the loop goes on serving


@pytest.mark.parametrize("where", ["main thread", "task thread"])
def test_an_interrupted_caller_cancels_its_batch(where):
    import ctypes
    import os
    import signal

    cancelled = threading.Event()

    async def slow() -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    caught: list[BaseException] = []

    def caller() -> None:
        try:
            run_shared(slow())
        except BaseException as err:  # noqa: BLE001 - what the caller saw is the point
            caught.append(err)

    if where == "main thread":  # ctrl-c, with Python's own handler (an earlier test may have set another)
        previous = signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()
            caller()
        finally:
            signal.signal(signal.SIGINT, previous)
    else:  # what Prefect does to a task thread that ran past its timeout
        t = threading.Thread(target=caller)
        t.start()
        time.sleep(0.3)
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(t.ident), ctypes.py_object(KeyboardInterrupt))
        t.join(10)
        assert not t.is_alive()
    assert caught and isinstance(caught[0], KeyboardInterrupt)
    assert cancelled.wait(5)
