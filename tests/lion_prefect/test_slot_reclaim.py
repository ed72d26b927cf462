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


def _scenario(env: dict[str, str]) -> tuple[subprocess.Popen, Path]:
    """The driver's scenario in the background, its output in files (a pipe left unread for the minute
    the other scenario takes could fill and stall it)."""
    home = Path(env["PREFECT_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([sys.executable, str(DRIVER), "scenario"], env=env, stdout=open(home / "out", "w"),
                            stderr=open(home / "err", "w"), text=True, cwd=REPO)
    return proc, home


def _figures(started: tuple[subprocess.Popen, Path]) -> dict:
    proc, home = started
    proc.wait(timeout=400)
    out, err = home / "out", home / "err"
    assert proc.returncode == 0, out.read_text()[-2000:] + err.read_text()[-4000:]
    return json.loads(out.read_text().strip().splitlines()[-1])


@pytest.fixture(scope="module")
def scenarios(tmp_path_factory):
    """Both scenarios at once (each mostly waits out a lease): ours on the local API, and one on a real
    `prefect server`, whose own repossessor revokes expired leases (our reclaim does not run against it)."""
    local = _scenario(_env(tmp_path_factory.mktemp("local") / "prefect"))
    port = free_port()
    env = _env(tmp_path_factory.mktemp("server") / "prefect", PREFECT_SERVER_SERVICES_REPOSSESSOR_LOOP_SECONDS="2")
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
        remote = _figures(_scenario({**env, "PREFECT_API_URL": url}))
    except BaseException:
        local[0].kill()
        raise
    finally:
        os.killpg(server.pid, 15)
        server.wait(30)
    return {"local": _figures(local), "server": remote}


def _check(figures: dict) -> None:
    assert figures["held_after_kill"] == 1  # the killed holder's slot is still counted ...
    assert figures["waited_dead_holder_s"] < 90  # ... and back within its 60 s lease, a 3 s spell and some slack
    assert figures["counted_leaseless"] == 1
    assert figures["waited_leaseless_s"] < 20
    assert figures["active_at_end"] == 0
    # a lease that holds no slot (a task's tags with no tag limit) is released without a word
    assert figures["empty_lease"] == {"resources": [], "counted": 0, "left": False, "warnings": []}


def test_a_killed_holders_slot_comes_back_on_the_local_api(scenarios):
    _check(scenarios["local"])


def test_a_killed_holders_slot_comes_back_on_a_real_prefect_server(scenarios):
    figures = scenarios["server"]
    assert figures["held_after_kill"] == 1
    assert figures["waited_dead_holder_s"] < 90
    # A real server's leaseless slot is not ours to judge (other clients' leases are in its memory):
    # it waits for the operator (`lion limits apply` does not touch counts), so only the first part counts.
