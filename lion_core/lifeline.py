"""Child processes that end when `lion` ends, however it ends (kill -9 included).

Two mechanisms, because each covers a case the other cannot:
- `guarded(cmd)` re-executes a command behind a tiny guard that asks the kernel for SIGTERM when its
  parent dies (PR_SET_PDEATHSIG). The kernel ties that to the *thread* that forked, so it is for
  children started from a thread that lives as long as the child (the main thread, or a task thread
  that waits for the child).
- `follow_parent` is a pool initializer for `ProcessPoolExecutor` workers, which are forked from
  whichever thread submits first: a daemon thread in the worker polls its parent pid and ends the
  worker when the parent is gone.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time

_GUARD = (
    "import ctypes, os, signal, sys\n"
    "ctypes.CDLL(None).prctl(1, signal.SIGTERM)\n"  # PR_SET_PDEATHSIG
    "if os.getppid() != int(sys.argv[1]): sys.exit(1)\n"  # the parent died before prctl took effect
    "os.execv(sys.argv[2], sys.argv[2:])\n"
)
# The same, for a command that starts its own children (launchers and their ranks): the guard stays
# as the group's leader and takes the whole process group down when its parent dies.
_GROUP_GUARD = (
    "import ctypes, os, signal, subprocess, sys, time\n"
    "ctypes.CDLL(None).prctl(1, signal.SIGTERM)\n"
    "if os.getppid() != int(sys.argv[1]): sys.exit(1)\n"
    "child = subprocess.Popen(sys.argv[2:])\n"
    "def stop(*_):\n"
    "    signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "    os.killpg(0, signal.SIGTERM)\n"
    "    end = time.monotonic() + 15\n"
    "    while child.poll() is None and time.monotonic() < end: time.sleep(0.2)\n"
    "    os.killpg(0, signal.SIGKILL)\n"
    "signal.signal(signal.SIGTERM, stop)\n"
    "sys.exit(child.wait())\n"
)


def guarded(cmd: list[str], group: bool = False) -> list[str]:
    """`cmd` behind the parent-death guard (start it with start_new_session=True, so that a stop
    reaches its whole group and a Ctrl-C in the terminal does not)."""
    return [sys.executable, "-c", _GROUP_GUARD if group else _GUARD, str(os.getpid()), *cmd]


def stop_group(proc: subprocess.Popen, grace_s: float) -> None:
    """SIGTERM to the process group a child leads (started with start_new_session=True), SIGKILL to
    what is left after `grace_s`, and reap the child."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def follow_parent(parent_pid: int, poll_s: float = 1.0) -> None:
    """Pool initializer: end this worker within `poll_s` of its parent's death."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(poll_s)
        os._exit(1)

    if os.getppid() != parent_pid:
        os._exit(1)
    threading.Thread(target=watch, name="follow-parent", daemon=True).start()
