"""The Prefect API that `lion run` and `lion evaluate` use when PREFECT_API_URL is unset.

Prefect would start a temporary server of its own, but that one runs in our process group (a Ctrl-C in
the terminal stops it before the flow can record its crash, and the client then retries against a dead
server for minutes), outlives a `kill -9` of `lion`, and keeps concurrency leases in memory (a slot
held by a killed run is never given back: its lease is gone with the server, its count stays). This
one is the same application (`prefect.server.api.server:create_app`, on loopback, the same database
under PREFECT_HOME) started by us:
- in its own session, behind the parent-death guard: signals to the terminal's group do not reach it,
  and it ends when `lion` ends, however `lion` ends;
- with leases on the file system (PREFECT_HOME/concurrency_leases), so a lease outlives the process
  that took it, and expired ones are released every 15 s while it runs, as a real server's
  repossessor service does (`lion_prefect.leases`);
- with SQLite write transactions that take the write lock when they begin (`create_app`).
"""

from __future__ import annotations

import atexit
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from lion_core.errors import LionError
from lion_core.lifeline import guarded, stop_group
from lion_core.llm.embedded import free_port
from lion_prefect.leases import LEASES_ENV, release_expired_leases

FILE_LEASES = "prefect.server.concurrency.lease_storage.filesystem"


def create_app():
    """Prefect's server application, with every SQLite transaction begun IMMEDIATE.

    Prefect begins its transactions DEFERRED. Each task run's start takes its tags' concurrency slots
    in one that reads the limits, then updates them; when another write (a log batch, an artifact, a
    state) commits in between, SQLite refuses the upgrade at once ("database is locked": its busy
    timeout does not apply to a stale snapshot), the server answers 503 and Prefect's client waits
    2 s before it asks again. On a tiny run that was 35 of its 60-odd task starts: about half its
    time. Begun IMMEDIATE, a transaction waits for the lock (up to the busy timeout) instead.
    PostgreSQL servers are not concerned."""
    from contextlib import asynccontextmanager

    from prefect.server.api.server import create_app as prefect_app
    from prefect.server.database.configurations import AioSqliteConfiguration

    deferred = AioSqliteConfiguration.begin_transaction

    @asynccontextmanager
    async def begin_immediate(self, session, with_for_update: bool = False):
        async with deferred(self, session, with_for_update=True) as transaction:
            yield transaction

    AioSqliteConfiguration.begin_transaction = begin_immediate
    return prefect_app()


def prefect_home() -> Path:
    return Path(os.environ.get("PREFECT_HOME", "~/.prefect")).expanduser()


class LocalApi:
    """A Prefect API server on loopback, for one `lion` command."""

    def __init__(self, startup_timeout_s: float | None = None, app: str = "lion_prefect.local_api:create_app"):
        self.app = app
        self.startup_timeout_s = startup_timeout_s or float(
            os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180"))
        self.proc: subprocess.Popen | None = None
        self.url = ""
        self.log_path = prefect_home() / "logs" / "lion-local-api.log"

    def start(self) -> LocalApi:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}/api"
        env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1",
               "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": FILE_LEASES}
        env.pop("PREFECT_API_URL", None)
        cmd = [sys.executable, "-m", "uvicorn", "--factory", self.app,
               "--host", "127.0.0.1", "--port", str(port), "--log-level", "error", "--lifespan", "on"]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(guarded(cmd), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         env=env, start_new_session=True)
        atexit.register(self.stop)
        self._wait_healthy()
        return self

    def repossess_every(self, interval_s: float = 15.0) -> None:
        """Release expired leases while we run, as a real server's repossessor service does: a slot
        of a run killed while holding it comes back within its lease and this interval, even when no
        shard of ours waits for it."""

        def loop() -> None:
            while self.proc is not None:
                time.sleep(interval_s)
                try:
                    release_expired_leases()
                except Exception:  # noqa: BLE001 - the API may be stopping; the next turn tries again
                    pass

        threading.Thread(target=loop, name="lion-repossessor", daemon=True).start()

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise LionError(f"the local Prefect API exited with code {self.proc.returncode}; see {self.log_path}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.3)
        self.stop()
        raise LionError(f"the local Prefect API did not answer within {self.startup_timeout_s:.0f} s; see {self.log_path}")

    def stop(self, grace_s: float = 10.0) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            stop_group(proc, grace_s)
        atexit.unregister(self.stop)


def use_local_api_unless_configured() -> LocalApi | None:
    """Start our local API and point Prefect's client at it, unless PREFECT_API_URL names a server.
    Call before anything imports Prefect's settings."""
    if os.environ.get("PREFECT_API_URL"):
        return None
    api = LocalApi().start()
    os.environ["PREFECT_API_URL"] = api.url
    os.environ[LEASES_ENV] = str(prefect_home() / "concurrency_leases")
    api.repossess_every()
    return api


def prefect_setup() -> None:
    """Before Prefect is imported: our logger in the run's logs, Prefect's usage analytics off (they
    call out to the internet, which a GPU node often cannot reach, and log errors when they fail), and
    our own local API server unless PREFECT_API_URL names one (the module's docstring says why).
    Settings the environment already holds win."""
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "lion")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    use_local_api_unless_configured()
