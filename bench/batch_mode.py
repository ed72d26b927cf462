"""The demo-sized Lion run with the teacher and referee in batch mode against the loopback server, next
to the same run interactive (the baseline, in the same invocation).

Both runs use `configs/embedded.yaml` (32 seeds, 2 iterations, 16 new instructions each, the embedded
student fine-tuned for real) with the teacher, referee and generator on the loopback OpenAI-compatible
server (`tests/fault_server.py`: deterministic answers; files and batches endpoints; a batch is in
progress for `--batch-seconds`). The batch run is killed (SIGKILL of `lion run`'s process group) while
it waits for its first referee batch, then resumed with `lion run --resume`. Printed: requests answered
by chat and by batch (in all, as many as the interactive run's when nothing is paid twice), batches
created, batch answers given again, and whether the pools and verdicts match.

    python bench/batch_mode.py [--batch-seconds 4] [--generator-batch] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the loopback server lives with the tests, outside the package
from lion_core.store import RunStore  # noqa: E402
from tests.fault_server import FaultPlan, FaultServer  # noqa: E402


def write_config(folder: Path, url: str, batch_roles: tuple[str, ...], poll_s: float) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    data = yaml.safe_load((REPO / "configs" / "embedded.yaml").read_text())
    for role in ("teacher", "referee", "generator"):
        data[role].update(base_url=url, model="fake-model")
        data[role]["rate_limits"] = {"requests_per_minute": 6000, "tokens_per_minute": 10_000_000, "max_concurrency": 8}
        if role in batch_roles:
            data[role].update(mode="batch", batch={"poll_interval_s": poll_s, "max_requests_per_batch": 40})
    data["data"]["seed"] = str(REPO / "data" / "demo_seeds.jsonl")
    data["training"]["deepspeed_config"] = str(REPO / "deployments" / "deepspeed" / "zero2.json")
    data["storage"] = {"runs_root": str(folder / "runs"), "response_store": str(folder / "responses.sqlite")}
    data.pop("evaluation", None)
    path = folder / "lion.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def lion(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([str(Path(sys.executable).parent / "lion"), *args], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def finish(proc: subprocess.Popen, what: str) -> None:
    if proc.wait() != 0:
        raise SystemExit(f"{what}: lion run exited with {proc.returncode}")


def pools(folder: Path) -> dict:
    store = RunStore(str(folder / "runs"), "bench")
    out = {}
    for k in store.iterations():
        for name in ("train_pool", "cache_pool", "judgments"):
            m = store.manifest(k)
            if m and name in m.files:
                rows = store.read_table(store.ref(k, name)).to_pylist()
                out[f"{k}/{name}"] = [(r["id"], r.get("label"), r.get("d")) for r in rows]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch-seconds", type=float, default=4.0, help="how long a batch stays in progress")
    ap.add_argument("--generator-batch", action="store_true", help="the generator in batch mode too")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    batch_roles = ("teacher", "referee", "generator") if args.generator_batch else ("teacher", "referee")
    out: dict = {"batch_roles": list(batch_roles)}
    with tempfile.TemporaryDirectory(prefix="lion-batch-bench-") as tmp:
        tmp = Path(tmp)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env.update(PREFECT_HOME=str(tmp / "prefect"), PREFECT_SERVER_ANALYTICS_ENABLED="false")

        started = time.monotonic()
        with FaultServer() as api:
            config = write_config(tmp / "interactive", api.url, (), 1.0)
            finish(lion(["run", "--config", str(config), "--run-id", "bench"], env), "interactive")
            out["interactive"] = {"chat_answers": sum(api.stats.answered.values()),
                                  "chat_bodies_answered_again": sum(n - 1 for n in api.stats.answered.values() if n > 1),
                                  "seconds": round(time.monotonic() - started)}

        started = time.monotonic()
        with FaultServer(FaultPlan(batch_complete_after_s=args.batch_seconds)) as api:
            config = write_config(tmp / "batch", api.url, batch_roles, 1.0)
            proc = lion(["run", "--config", str(config), "--run-id", "bench"], env)
            # kill it while it waits: the teacher's 32 answers are one batch; the referee's 64 verdicts come next
            while not any(b"<<<ANSWER OF ASSISTANT 1>>>" in api.files[b["input_file_id"]]["bytes"]
                          for b in list(api.batches.values())):
                if proc.poll() is not None:
                    raise SystemExit("the batch run ended before it could be killed")
                time.sleep(0.2)
            before_kill = {"batches_created": api.stats.batches_created,
                           "batch_answers": sum(api.stats.batch_answered.values())}
            time.sleep(0.5)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            killed_at = time.monotonic() - started
            finish(lion(["run", "--config", str(config), "--resume", "bench"], env), "resumed batch run")
            stats = api.stats
            out["batch"] = {
                "chat_answers": sum(stats.answered.values()), "batch_answers": sum(stats.batch_answered.values()),
                # the loopback server tells requests apart by their body, so the generator's repeated draws of one
                # seed (same body, another sample index) count as the same body in both runs
                "batch_bodies_answered_again": sum(n - 1 for n in stats.batch_answered.values() if n > 1),
                "chat_bodies_answered_again": sum(n - 1 for n in stats.answered.values() if n > 1),
                "batches_created": stats.batches_created, "files_uploaded": stats.files_uploaded,
                "killed_after_s": round(killed_at), "before_kill": before_kill,
                "seconds": round(time.monotonic() - started),
            }
        out["same_pools_and_verdicts"] = pools(tmp / "interactive") == pools(tmp / "batch")
        out["pool_sizes"] = {k: len(v) for k, v in pools(tmp / "batch").items() if "pool" in k}
    i, b = out["interactive"], out["batch"]
    print(f"interactive (baseline): {i['chat_answers']} answers by chat in {i['seconds']} s "
          f"({i['chat_bodies_answered_again']} repeated generator draws)")
    print(f"batch ({', '.join(batch_roles)}): {b['batch_answers']} answers by batch and {b['chat_answers']} by chat "
          f"= {b['batch_answers'] + b['chat_answers']} in all, {b['batches_created']} batches; killed after "
          f"{b['killed_after_s']} s while waiting for the referee's first batches, resumed; batch answers given again: "
          f"{b['batch_bodies_answered_again']}; {b['seconds']} s")
    print(f"same pools and verdicts as interactive: {out['same_pools_and_verdicts']}")
    if args.json:
        print(json.dumps(out))


if __name__ == "__main__":
    main()
