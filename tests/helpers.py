"""Small helpers shared by tests."""

import os


def process_alive(pid: int) -> bool:
    """True while `pid` runs; a zombie (exited, not yet reaped) counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


class FaultServerProcess:
    """The loopback fault server in a process of its own, for timing tests: a server thread sharing
    the test's interpreter would stamp arrivals late whenever the client holds the GIL."""

    def __init__(self, *args: str):
        import subprocess
        import sys

        self._proc = subprocess.Popen([sys.executable, "-m", "lion_core.llm.fault_server", *args],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.url = f"http://127.0.0.1:{int(self._proc.stdout.readline())}/v1"
        self.stats: dict = {}

    def __enter__(self) -> "FaultServerProcess":
        return self

    def __exit__(self, *exc: object) -> None:
        import json

        out, _ = self._proc.communicate(timeout=30)
        self.stats = json.loads(out.strip().splitlines()[-1])


def wait_until_gone(pid: int, timeout_s: float = 5.0) -> bool:
    """Poll until `pid` has exited; False if it is still running after `timeout_s`."""
    import time

    deadline = time.monotonic() + timeout_s
    while process_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True
