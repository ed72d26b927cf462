"""Chaos: `lion run` killed with SIGKILL in each stage, then `lion run --resume`.

Each case runs the real CLI (our local Prefect API, the launched fine-tune, the student's child process)
against a server that speaks the OpenAI API over real HTTP and injects faults (5% 500s, 5% 429s). It
kills the run when its stage is reached and asserts what a user paying per request relies on: the
resumed run ends with the pools of an uninterrupted run (the session's, tests/flows/conftest.py), no
request answered before the kill is answered again (beyond the few in flight), no finished fine-tune
runs again, no process of the killed run is left, and no API slot stays held. The referee case runs in
`make test` on a run of two iterations first stopped with SIGTERM in its first fine-tune and resumed,
then killed in iteration 1 (after a whole iteration), with the run folder and response store moved to
another root and the limits changed before the last resume; all of them run in `make chaos` (one
iteration, about a minute each).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fault_server import FaultPlan, FaultServer
from tests.flows.conftest import pool_rows, write_flow_config
from tests.helpers import descendants, expire_leases, process_alive
from tests.lion_cli.lion_script import LION

REPO = Path(__file__).resolve().parents[2]
PLAN = FaultPlan(rate_500=0.05, rate_429=0.05, retry_after_s=0.05, seed=3)
IN_FLIGHT = 4
"""The most requests in flight at once: 2 shard slots per key x ceil(4 connections / 2)."""


def _role(prompt: str) -> str:
    if "<<<ANSWER OF ASSISTANT 1>>>" in prompt:
        return "referee"
    return "generator" if "<<<EXAMPLE TASK>>>" in prompt else "teacher"


def _answered(api: FaultServer, role: str) -> int:
    return sum(n for prompt, n in api.stats.successes.items() if _role(prompt) == role)


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    return {**env, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PYTHONWARNINGS": "ignore"}


# stage -> (what shows it has started: a role's answers on the API, or a line of the run's log; delay)
STAGES = {
    "teacher": ("api:teacher:3", 0.0),
    "training": ("log:lion.train - launching", 1.5),
    "student": ("log:for flow 'discrimination'", 2.0),
    "referee": ("api:referee:3", 0.0),
    "generation": ("api:generator:1", 0.0),
    "pool-update": ("log:Task run 'iter-0-generator' - Finished", 0.0),
}


def _lion_run(config: Path, home: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([str(LION), "run", "--config", str(config), *args], env=_env(home), capture_output=True,
                          text=True, timeout=timeout)


def _sigterm_in_training(config: Path, home: Path) -> dict:
    """`lion run` stopped with SIGTERM once its first fine-tune has started: how it ended, and which of
    the processes it had started (the local API, the fine-tune's process group) outlived it."""
    train_log = Path(yaml_runs_root(config)) / "chaos" / "checkpoints" / "iter-0" / "train.log"
    proc = subprocess.Popen([str(LION), "run", "--config", str(config), "--run-id", "chaos"], env=_env(home),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300
    while not (train_log.is_file() and train_log.stat().st_size) and proc.poll() is None:
        assert time.monotonic() < deadline, "training never started"
        time.sleep(0.2)
    started = descendants(proc.pid)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    left, gone_s = _outliving(started)  # the fine-tune's guard gives its ranks 15 s, then kills them
    return {"returncode": proc.returncode, "output": out, "started": len(started), "left": left,
            "all_ended_s": round(gone_s, 1)}


def _kill_at(stage: str, config: Path, home: Path, api: FaultServer, resume: bool = False,
             trigger: str | None = None) -> tuple[dict, set[int], str]:
    trigger, delay = (trigger, 0.0) if trigger else STAGES[stage]
    log = home.parent / f"{stage}.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([str(LION), "run", "--config", str(config), "--resume" if resume else "--run-id",
                                 "chaos"], env=_env(home), stdout=out, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 400
    kind, _, what = trigger.partition(":")
    while True:
        assert proc.poll() is None, f"the run ended before {stage}:\n" + log.read_text()[-3000:]
        assert time.monotonic() < deadline, f"{stage} never started:\n" + log.read_text()[-3000:]
        if kind == "api":
            role, _, n = what.partition(":")
            if _answered(api, role) >= int(n):
                break
        elif what in log.read_text():
            break
        time.sleep(0.05)
    time.sleep(delay)
    started = descendants(proc.pid)
    answered_before = dict(api.stats.answered)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    return answered_before, started, log.read_text()


def _outliving(started: set[int], limit_s: float = 30.0) -> tuple[list[int], float]:
    """Processes of a killed run still alive after `limit_s` (they are given that long to end on
    their own: the fine-tune's guard gives its ranks 15 s), and how long the last one took."""
    t0 = time.monotonic()
    while (left := [p for p in started if process_alive(p)]) and time.monotonic() - t0 < limit_s:
        time.sleep(0.2)
    return left, time.monotonic() - t0


def _slots_held(config: Path, home: Path) -> int:
    """Slots of the config's limits still counted once the killed run's leases have expired (the clock
    set forward past their 60 s), after what a new run does first: release expired leases."""
    expire_leases(home)
    code = (
        f"import sys; sys.path.insert(0, {str(REPO)!r})\n"
        "from lion_prefect.local_api import use_local_api_unless_configured; use_local_api_unless_configured()\n"
        "from lion_prefect.leases import release_expired_leases; release_expired_leases()\n"
        "from prefect import get_client\n"
        "from lion_core.config import load_config\nfrom lion_core.limits import api_limits\n"
        f"names = api_limits(load_config({str(config)!r}))\n"
        "with get_client(sync_client=True) as c:\n"
        "    print(sum(c.read_global_concurrency_limit_by_name(n).active_slots for n in names))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], env=_env(home), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return int(r.stdout.strip().splitlines()[-1])


def _moved(config: Path, tmp_path: Path) -> Path:
    """The run folder and the response store copied to another root, and the config a user then resumes
    with: the new locations, and what one changes after a 429 storm (half the request rate, one more
    retry, one more parallel task)."""
    import shutil

    import yaml

    data = yaml.safe_load(config.read_text())
    dest = tmp_path / "elsewhere"
    shutil.copytree(tmp_path / "runs" / "chaos", dest / "runs" / "chaos")
    for store_file in tmp_path.glob("responses.sqlite*"):  # with its write-ahead log: a killed run's last answers
        shutil.copy2(store_file, dest / store_file.name)
    shutil.rmtree(tmp_path / "runs")
    data["storage"] = {"runs_root": str(dest / "runs"), "response_store": str(dest / "responses.sqlite")}
    for role in ("teacher", "referee", "generator"):
        data[role]["rate_limits"]["requests_per_minute"] //= 2
    data["orchestration"]["task_retries"] += 1
    data["orchestration"]["max_parallel_tasks"] += 1
    moved = dest / "lion.yaml"
    moved.write_text(yaml.safe_dump(data, sort_keys=False))
    return moved


def _chaos(stage: str, uninterrupted: dict, tiny_model: Path, tmp_path: Path, move: bool = False,
           sigterm_first: bool = False, iterations: int = 1) -> dict:
    """Kill `lion run` in `stage` of its last iteration and resume it (after moving it, with `move`); with
    `sigterm_first`, the run was first stopped with SIGTERM in its first fine-tune and resumed, and it is
    that resume that is killed. Asserts what every case must hold; returns the figures."""
    home = tmp_path / "prefect"
    sigterm = None
    trigger = None
    if iterations == 2:
        assert stage == "referee"  # a few verdicts into iteration 1, after the uninterrupted run's iteration 0
        trigger = f"api:referee:{uninterrupted['referee_one_iteration'] + 3}"
    with FaultServer(PLAN) as api:
        config = write_flow_config(tmp_path, api.url, tiny_model, iterations=iterations, task_retries=3)
        if sigterm_first:
            sigterm = _sigterm_in_training(config, home)
        answered_before, started, killed_log = _kill_at(stage, config, home, api, resume=sigterm_first, trigger=trigger)
        # the SIGTERM's resume asked again at most what was in flight when the run stopped
        paid_twice_before_kill = sum(n - 1 for n in answered_before.values() if n > 1)
        left, gone_s = _outliving(started)
        if move:
            config = _moved(config, tmp_path)
            # The moved run's lock does not name the killed attempt, so its slots come back only as their
            # leases expire, as for an attempt on another machine: the clock is set past their 60 s.
            expire_leases(home)
        runs = Path(yaml_runs_root(config))
        t0 = time.monotonic()
        r = _lion_run(config, home, "--resume", "chaos")
        resume_s = time.monotonic() - t0
        assert r.returncode == 0, killed_log[-2000:] + r.stdout[-3000:] + r.stderr[-3000:]
        arrivals = [t for times in api.stats.arrivals.values() for t in times if t > t0]
        first_request_s = round(min(arrivals) - t0, 1) if arrivals else None
        again = {fp: n - answered_before[fp] for fp, n in api.stats.answered.items()
                 if fp in answered_before and n > answered_before[fp]}
        figures = {"stage": stage, "requests_before": sum(answered_before.values()),
                   "requests_after": sum(api.stats.answered.values()) - sum(answered_before.values()),
                   "paid_twice": sum(again.values()), "processes_left": len(left), "all_ended_s": round(gone_s, 1),
                   "resume_s": round(resume_s, 1), "first_request_s": first_request_s}
    print("chaos:", json.dumps(figures))
    figures["sigterm"] = sigterm
    assert paid_twice_before_kill <= IN_FLIGHT
    assert left == [], f"{len(left)} process(es) of the killed run still alive"
    assert figures["paid_twice"] <= IN_FLIGHT
    for k in range(1, iterations + 1):  # the uninterrupted run's after each iteration (conftest)
        for name in ("train_pool", "cache_pool"):
            assert pool_rows(runs, "chaos", k, name) == pool_rows(uninterrupted["folder"] / "runs", "ref", k, name), (k, name)
    assert (runs / "chaos" / "checkpoints" / "final" / "model.safetensors").is_file()
    assert _slots_held(config, home) == 0
    if stage in ("student", "referee", "generation", "pool-update"):  # the last iteration's fine-tune had finished
        launched = (r.stdout + r.stderr).count("lion.train - launching")
        assert launched == 1, f"{launched} fine-tunes launched on resume; only the final one may run"
    if move:
        history = json.loads((runs / "chaos" / "resumes.json").read_text())
        changed = {c["field"] for c in history[-1]["changed"]}
        assert {"storage.runs_root", "teacher.rate_limits.requests_per_minute", "orchestration.task_retries",
                "orchestration.max_parallel_tasks"} <= changed
    return figures


def yaml_runs_root(config: Path) -> str:
    import yaml

    return yaml.safe_load(config.read_text())["storage"]["runs_root"]


@pytest.fixture(scope="module")
def stopped_then_killed(uninterrupted, tiny_model, tmp_path_factory):
    """One run of two iterations through what a user's run meets: stopped with SIGTERM in its first
    fine-tune, resumed, killed with SIGKILL in iteration 1's referee stage, moved to another root with
    new limits, and resumed."""
    return _chaos("referee", uninterrupted, tiny_model, tmp_path_factory.mktemp("chaos-referee"), move=True,
                  sigterm_first=True, iterations=2)


@pytest.mark.slow
def test_sigterm_mid_training_stops_everything_it_started_and_the_run_resumes(stopped_then_killed):
    """The resume after the SIGTERM is the run killed later; the final resume ends with the uninterrupted
    run's pools and the final checkpoint (asserted by the fixture)."""
    sigterm = stopped_then_killed["sigterm"]
    assert sigterm["returncode"] == 128 + signal.SIGTERM, sigterm["output"][-3000:]
    assert "stopped by SIGTERM" in sigterm["output"]
    assert sigterm["started"] > 0  # Prefect's local API server, the training process group
    assert sigterm["left"] == [], sigterm["output"][-3000:]


@pytest.mark.slow
def test_killed_in_the_referee_stage_then_moved_resumes_to_the_same_pools_with_new_limits(stopped_then_killed):
    figures = stopped_then_killed
    assert figures["requests_after"] > 0
    # the killed attempt's expired leases are released by the resume's first step, not waited for
    assert figures["first_request_s"] is not None and figures["first_request_s"] < 45


@pytest.mark.chaos
@pytest.mark.parametrize("stage", [s for s in STAGES if s != "referee"])
def test_killed_in_any_stage_resumes_to_the_same_pools(stage, uninterrupted, tiny_model, tmp_path):
    _chaos(stage, uninterrupted, tiny_model, tmp_path)


def _flow_run_states(home: Path) -> dict[str, str]:
    """The state of each flow run on the local API under `home`, by flow run name."""
    code = (
        f"import sys; sys.path.insert(0, {str(REPO)!r})\n"
        "from lion_prefect.local_api import use_local_api_unless_configured; use_local_api_unless_configured()\n"
        "from prefect import get_client\n"
        "with get_client(sync_client=True) as c:\n"
        "    print(' '.join(sorted(f'{r.name}={r.state.name}' for r in c.read_flow_runs() if r.state)))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], env=_env(home), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return dict(pair.split("=", 1) for pair in r.stdout.split())


@pytest.fixture(scope="module")
def stopped_while_waiting(tiny_model, tmp_path_factory):
    """The resume that hung forever: every slot of the key held (here by a live holder), the shards
    waiting. Two runs wait at once on the same held slot; one gets ctrl-c, the other SIGTERM."""
    from lion_core.config import load_config
    from lion_core.limits import limit_name

    tmp_path = tmp_path_factory.mktemp("slot-wait")
    home = tmp_path / "prefect"
    runs: dict[int, dict] = {}
    with FaultServer() as api:
        config = write_flow_config(tmp_path, api.url, tiny_model, iterations=1)
        limit = limit_name(load_config(config).teacher)
        holder = subprocess.Popen([sys.executable, str(REPO / "tests" / "lion_prefect" / "slot_driver.py"), "hold-with-api",
                                   limit], env={**_env(home), "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE, text=True)
        try:
            assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
            for signum in (signal.SIGINT, signal.SIGTERM):
                log = tmp_path / f"{signum.name}.log"
                with open(log, "w") as out:
                    proc = subprocess.Popen([str(LION), "run", "--config", str(config), "--run-id", f"waits-{signum}"],
                                            env=_env(home), stdout=out, stderr=subprocess.STDOUT, text=True)
                runs[signum] = {"proc": proc, "log": log}
            deadline = time.monotonic() + 300
            for run in runs.values():
                while "for flow 'imitation'" not in run["log"].read_text():  # its shards then wait for the slot
                    assert run["proc"].poll() is None and time.monotonic() < deadline, run["log"].read_text()[-3000:]
                    time.sleep(0.2)
            time.sleep(5)
            for signum, run in runs.items():
                proc = run["proc"]
                started = descendants(proc.pid)
                t0 = time.monotonic()
                proc.send_signal(signum)
                proc.wait(60)
                run.update(stop_s=time.monotonic() - t0, returncode=proc.returncode, left=_outliving(started, 20.0)[0])
        finally:
            for run in runs.values():
                if run["proc"].poll() is None:
                    run["proc"].kill()
            holder.kill()
            holder.wait()
        answered = sum(api.stats.successes.values())
    states = _flow_run_states(home)
    return {signum: {**run, "answered": answered, "states": states} for signum, run in runs.items()}


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_run_waiting_for_a_slot_stops_within_seconds_and_is_marked_crashed(signum, stopped_while_waiting):
    """A stop must end `lion` at once, record the crash, and leave no process behind."""
    run = stopped_while_waiting[signum]
    print(f"stop: {signal.Signals(signum).name} -> exit {run['returncode']} in {run['stop_s']:.1f} s")
    assert run["returncode"] == 128 + signum, run["log"].read_text()[-3000:]
    assert run["stop_s"] < 30
    assert run["answered"] == 0
    assert run["left"] == []
    assert run["states"].get(f"lion-waits-{signum}") == "Crashed", run["states"]
