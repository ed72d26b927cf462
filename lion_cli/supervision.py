"""The `lion` process itself: how it stops (SIGTERM, Ctrl-C, a stop deadline, a forced exit), how it
exits, and its memory arenas. Nothing here knows the commands; lion_cli.main runs them under it."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading
import uuid

STOP_GRACE_S = 10.0
"""After SIGTERM or Ctrl-C, how long the orderly stop may take (Prefect marks its flow runs crashed,
servers stop, exit handlers run) before `lion` marks its runs crashed itself and exits. The orderly
stop can wait without bound: the task runner joins its threads, and a shard may be waiting for a slot
or a reply. What `lion` started ends with it (lion_core.lifeline)."""
PROCESS_TAG = f"lion-process-{uuid.uuid4().hex[:12]}"
"""Tag of every flow and task run this process makes: what to mark crashed when it is stopped."""
_stop_asked: list[int] = []


def fewer_malloc_arenas() -> None:
    """glibc gives each thread its own heap arena (up to 8 per core), and the flow's task threads,
    Prefect's API server, the embedded servers and the fine-tune all run many threads. Two arenas per
    process keep the memory their freed blocks pin down small; children inherit the setting."""
    os.environ.setdefault("MALLOC_ARENA_MAX", "2")
    try:
        ctypes.CDLL("libc.so.6").mallopt(-8, int(os.environ["MALLOC_ARENA_MAX"]))  # M_ARENA_MAX, for us
    except (OSError, AttributeError, ValueError):  # not glibc
        pass


def handle_stops() -> None:
    """SIGTERM ends `lion` through its exit handlers, and the first SIGTERM or SIGINT arms the stop
    deadline. A flow run turns SIGTERM into a crash state and then re-sends it to the handler it found;
    with Python's default there, the process would die on the spot and leave Prefect's local API server
    (and anything else stopped at exit) running. Ours stops them and exits 143."""
    signal.signal(signal.SIGTERM, _terminated)
    _watch_for_stops()


def exit_code(code: int) -> int:
    """The code to leave with: a stop's (128 + its signal, as a shell reports it) however the stop
    surfaced (KeyboardInterrupt, a crashed flow run), else `code`."""
    return 128 + _stop_asked[0] if _stop_asked else code


def leave(code: int) -> None:
    """Leave with `code`. Arrow's C++ thread pools can abort the interpreter's final teardown ("terminate
    called without an active exception"), turning a finished command into exit -6
    now and then; so the exit handlers run (the embedded server's and Prefect's shutdown, logging's
    flush) and the process ends without that teardown."""
    import atexit

    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a reader that went away (`lion ... | head`), a closed stream
            pass
    os._exit(code)


def _terminated(signum: int, frame: object) -> None:
    _say("lion: stopped by SIGTERM; what finished is kept, resume with --resume\n")
    leave(128 + signum)


def _say(text: str) -> None:
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.write(text)
        sys.stderr.flush()


def _watch_for_stops() -> None:
    """Arm a deadline at the first SIGTERM or SIGINT, whoever handles the signal. During a flow run
    Prefect's own SIGTERM handler is installed, and after it runs the main thread may wait on worker
    threads (a shard waiting for a slot, a request in flight) without bound; the signal module writes
    every signal's number to the wakeup fd before any Python handler runs, and a thread reads it."""
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # a handler, so that SIGINT is written too

    def watch() -> None:
        while True:
            for signum in os.read(read_fd, 64):
                if signum in (signal.SIGTERM, signal.SIGINT):
                    _stop_deadline(signum)

    threading.Thread(target=watch, name="lion-stop-watch", daemon=True).start()


def _stop_deadline(signum: int) -> None:
    if _stop_asked:  # a second signal: no more waiting
        _overdue(128 + _stop_asked[0], "a second signal")
        return
    _stop_asked.append(signum)
    timer = threading.Timer(STOP_GRACE_S, _overdue, (128 + signum, f"{STOP_GRACE_S:.0f} s"))
    timer.daemon = True
    timer.start()


def _overdue(code: int, why: str) -> None:
    with contextlib.suppress(ValueError):
        name = signal.Signals(code - 128).name if code > 128 else "a signal"
        _say(f"lion: stopped by {name} (forced, {why} after it); what finished is kept, resume with --resume\n")
    marker = threading.Thread(target=_mark_crashed, daemon=True)
    marker.start()
    marker.join(8.0)  # the API is ours and up; if it is not, stopping matters more than the record
    os._exit(code)


def _mark_crashed() -> None:
    """Mark this process's unfinished flow and task runs Crashed, as Prefect does on an orderly stop."""
    if "prefect" not in sys.modules:  # no flow ran: nothing to mark, and no API to mark it on
        return
    try:
        from lion_prefect.orphans import crash_tagged_runs

        crash_tagged_runs(PROCESS_TAG, "lion was stopped (SIGTERM or Ctrl-C); resume with --resume")
    except Exception:  # noqa: BLE001 - best effort on the way out
        pass
