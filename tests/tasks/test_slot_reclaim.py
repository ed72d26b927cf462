"""No API slot outlives its holder: a shard killed with SIGKILL while holding a slot, on our local API
and on a real `prefect server`; and a slot counted with no lease at all (what a server that kept its
leases in memory leaves after a restart)."""

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from lion_core.lifeline import guarded
from lion_core.llm.embedded import free_port

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
DRIVER = Path(__file__).with_name("slot_driver.py")


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false", PYTHONPATH=str(REPO),
               PYTHONWARNINGS="ignore", **extra)
    return env


def _scenario(env: dict[str, str]) -> dict:
    r = subprocess.run([sys.executable, str(DRIVER), "scenario"], env=env, capture_output=True, text=True,
                       timeout=400, cwd=REPO)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def _check(figures: dict) -> None:
    assert figures["held_after_kill"] == 1  # the killed holder's slot is still counted ...
    assert figures["waited_dead_holder_s"] < 60 + 30 + 20  # ... and back within a lease and a spell
    assert figures["counted_leaseless"] == 1
    assert figures["waited_leaseless_s"] < 20
    assert figures["active_at_end"] == 0


def test_a_killed_holders_slot_comes_back_on_the_local_api(tmp_path):
    _check(_scenario(_env(tmp_path / "prefect")))


def test_a_killed_holders_slot_comes_back_on_a_real_prefect_server(tmp_path):
    port = free_port()
    # The server's own repossessor revokes expired leases; our reclaim does not run against it.
    env = _env(tmp_path / "prefect", PREFECT_SERVER_SERVICES_REPOSSESSOR_LOOP_SECONDS="2")
    server = subprocess.Popen(guarded([str(Path(sys.executable).parent / "prefect"), "server", "start",
                                       "--host", "127.0.0.1", "--port", str(port)]),
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}/api"
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2):
                    break
            except OSError:
                assert time.monotonic() < deadline and server.poll() is None, "prefect server did not start"
                time.sleep(0.5)
        figures = _scenario({**env, "PREFECT_API_URL": url})
    finally:
        os.killpg(server.pid, 15)
        server.wait(30)
    assert figures["held_after_kill"] == 1
    assert figures["waited_dead_holder_s"] < 60 + 30 + 20
    # A real server's leaseless slot is not ours to judge (other clients' leases are in its memory):
    # it waits for the operator (`lion limits apply` does not touch counts), so only the first part counts.
