"""Who holds a request while it is in flight: the claim a worker takes in the response store before it
sends a request, so that two workers racing for it (two shards, two processes, two machines) pay for it
once. The database decides who wins (a conditional upsert), not a lock in one process.

A claim is a lease: its holder renews it while the request is in flight and deletes it once the answer or
the failure is stored. A holder that dies leaves its claim to expire, after which anyone may take it; a
holder on this very machine (same host, boot and PID namespace) whose process is gone is known dead at once,
so a resume after `kill -9` on the same machine does not wait for the lease.
"""

from __future__ import annotations

import functools
import os
import socket
import uuid
from dataclasses import dataclass


@functools.cache
def _machine() -> str:
    """This machine and PID namespace: a PID means the same process only among holders that share it."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as fh:
            boot = fh.read().strip()
        pidns = str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:  # not Linux: no holder is ever judged dead before its lease ends
        return f"{socket.gethostname()}|unknown-{uuid.uuid4().hex}"
    return f"{socket.gethostname()}|{boot}|{pidns}"


@dataclass(frozen=True)
class Holder:
    """One gateway batch's name in the claims table: `machine|pid|nonce`."""

    name: str

    @classmethod
    def new(cls) -> Holder:
        return cls(f"{_machine()}|{os.getpid()}|{uuid.uuid4().hex[:12]}")


def known_dead(holder: str) -> bool:
    """True when `holder` ran on this machine and its process is gone; False when it lives or is elsewhere."""
    parts = holder.rsplit("|", 2)
    if len(parts) != 3 or parts[0] != _machine() or not parts[1].isdigit() or int(parts[1]) == os.getpid():
        return False
    pid = parts[1]
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, someone else's
        return False
    return False
