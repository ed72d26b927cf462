"""Our local Prefect API against Prefect's own application, when a task run starts while another write
holds SQLite's lock: the start takes its tags' concurrency slots in a transaction that reads the limits,
then writes them. Begun DEFERRED (Prefect's), it read before the other write committed and SQLite then
refuses its write at once ("database is locked"): the server answers 503 and Prefect's client waits 2 s
to ask again. Begun IMMEDIATE (ours), it waits for the lock and goes on."""

import json
import sqlite3
import threading
import time
import urllib.error
import urllib.request

import pytest

from lion_prefect.local_api import LocalApi

pytestmark = pytest.mark.slow


def _take_slots_while_another_write_holds_the_lock(app: str, home, monkeypatch) -> tuple[int, float]:
    monkeypatch.setenv("PREFECT_HOME", str(home))
    monkeypatch.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    api = LocalApi(startup_timeout_s=120, app=app).start()
    try:
        db = sqlite3.connect(home / "prefect.db", timeout=30, isolation_level=None, check_same_thread=False)
        db.execute("BEGIN IMMEDIATE")  # another writer: a log batch, an artifact, a state
        db.execute("CREATE TABLE lion_probe (x INTEGER)")
        threading.Timer(1.0, db.execute, ("COMMIT",)).start()
        time.sleep(0.2)
        body = {"slots": 1, "names": ["tag:lion"], "mode": "concurrency", "lease_duration": 60}
        request = urllib.request.Request(f"{api.url}/v2/concurrency_limits/increment-with-lease",
                                         json.dumps(body).encode(), {"content-type": "application/json"})
        start = time.monotonic()
        try:
            with urllib.request.urlopen(request, timeout=60) as r:  # no retries: what the server answered
                status = r.status
        except urllib.error.HTTPError as err:
            status = err.code
        return status, time.monotonic() - start
    finally:
        api.stop()


def test_a_task_run_start_waits_for_the_lock_instead_of_being_refused(tmp_path, monkeypatch):
    status, seconds = _take_slots_while_another_write_holds_the_lock("lion_prefect.local_api:create_app", tmp_path / "ours",
                                                                     monkeypatch)
    assert status == 200 and seconds < 10, (status, seconds)  # served once the other write committed (~0.8 s)
    # the same moment on Prefect's own application: refused, and the client would ask again 2 s later
    status, _ = _take_slots_while_another_write_holds_the_lock("prefect.server.api.server:create_app",
                                                               tmp_path / "prefect", monkeypatch)
    assert status == 503
