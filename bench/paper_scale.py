"""The paper's setting, simulated end to end: 52K Alpaca seeds, 3 iterations, 6K new instructions each.

Runs the real `lion run` (its local Prefect API, the flows and tasks, the gateway and response store,
the Parquet pools, the ROUGE-L filter, the launched DeepSpeed fine-tune, batched student inference and
the reports) against `bench/paper_server.py`, a loopback OpenAI-compatible endpoint in a process of its
own whose teacher, referee and generator replies have the size and format of real ones, with faults
(429 with Retry-After, 500, reset connections) on a share of the requests.

What is simulated or capped, and why (2 CPU cores, no GPU):
- the API models: the loopback server, so the figures are this code's own cost, not a provider's;
- the student: SmolLM2's tokenizer and architecture with 2 layers of width 32 and random weights (a
  135M model would need days on 2 cores to answer 174K prompts), going through the real fine-tune
  (DeepSpeed ZeRO-2, `training.max_steps` steps per iteration) and the real batched inference path,
  with `--max-new-tokens` new tokens per answer.

Measured in the same run: the endpoint's own ceiling (a bare client sending referee requests as fast as
the server takes them, nothing stored), then the run. `--kill-at referee` kills `lion run` with SIGKILL
halfway through iteration 1's referee stage, resumes it, and compares what the server answered and the
pools with an uninterrupted run (`--reference FILE`, this script's JSON from such a run with the same
settings; without it the uninterrupted run is made first).

    python bench/paper_scale.py [--seeds 52002] [--iterations 3] [--new 6000] [--json]
    python bench/paper_scale.py --kill-at referee --reference paper-scale.json --json
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import yaml  # noqa: E402
from proc_memory import TreeSampler  # noqa: E402

ALPACA = "stanford_alpaca/alpaca_data_52k_en_via_open-chinese.parquet"


def default_alpaca() -> Path:
    """The public Alpaca data beside the checkout, as the tests find it (LION_SHARED_DATA overrides)."""
    root = Path(os.environ.get("LION_SHARED_DATA", REPO.parent / "shared" / "data"))
    return root / ALPACA


# -- set-up ---------------------------------------------------------------------------------------------
def write_seeds(alpaca: Path, n: int | None, out: Path) -> int:
    import pandas as pd

    df = pd.read_parquet(alpaca, columns=["instruction", "input", "output"])
    if n:
        df = df.iloc[:n]
    df.to_parquet(out, index=False)
    return len(df)


def make_student(out: Path) -> Path:
    """SmolLM2's tokenizer and architecture, shrunk to two thin layers with random weights."""
    if (out / "config.json").is_file():
        return out
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from lion_core.llm.embedded import embedded_model_dir

    tok = AutoTokenizer.from_pretrained(embedded_model_dir())
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=1024,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, tie_word_embeddings=True)
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def write_config(folder: Path, url: str, seeds: Path, student: Path, args: argparse.Namespace) -> Path:
    """The paper's loop settings and the shipped configs/openai.yaml orchestration, on the loopback
    endpoint with its rate limits lifted (the figures are ours, not a provider's)."""
    shipped = yaml.safe_load((REPO / "configs" / "openai.yaml").read_text())
    price = shipped["teacher"]["price"]
    fast = {"requests_per_minute": 10_000_000, "tokens_per_minute": 10_000_000_000,
            "max_concurrency": args.concurrency}
    retry = {"max_attempts": 8, "initial_backoff_s": 0.05, "max_backoff_s": 1.0, "request_timeout_s": 60}

    def role(name: str) -> dict:
        return {"base_url": url, "model": "sim-gpt-3.5-turbo", "sampling": shipped[name]["sampling"],
                "rate_limits": fast, "retry": retry, "price": price}

    data = {
        "teacher": role("teacher"),
        "referee": {**role("referee"), "prompt_style": "lion", "max_reasks": shipped["referee"]["max_reasks"]},
        "generator": {**role("generator"), "max_tokens_per_seed_word": shipped["generator"]["max_tokens_per_seed_word"]},
        "student": {"model": str(student), "prompt_format": "alpaca", "dtype": "float32",
                    "generation": {"do_sample": True, "temperature": 0.7, "max_new_tokens": args.max_new_tokens,
                                   "batch_size": args.student_batch}},
        "training": {"learning_rate": 1e-3, "num_train_epochs": 3, "max_steps": args.train_steps, "max_length": 256,
                     "effective_batch_size": 16, "per_device_batch_size": 4, "bf16": False,
                     "gradient_checkpointing": False, "freeze_embeddings": False,
                     "deepspeed_config": str(REPO / "deployments" / "deepspeed" / "zero2.json"),
                     "launcher": "python", "num_gpus": 1, "timeout_s": 3600},
        "loop": {**shipped["loop"], "iterations": args.iterations, "new_instructions_per_iteration": args.new},
        "data": {"seed": str(seeds)},
        "storage": {"runs_root": str(folder / "runs"), "response_store": str(folder / "responses.sqlite")},
        "orchestration": {**shipped["orchestration"],
                          **({"shards_in_flight_per_key": args.shards_in_flight} if args.shards_in_flight else {})},
    }
    path = folder / "paper-scale.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


class Server:
    def __init__(self, alpaca: Path, latency_s: float, fault_rate: float, hard_share: float):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.paper_server", "--alpaca", str(alpaca), "--latency-s", str(latency_s),
             "--fault-rate", str(fault_rate), "--hard-share", str(hard_share)],
            cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.url = f"http://127.0.0.1:{int(self.proc.stdout.readline())}/v1"

    def stats(self) -> dict:
        with urllib.request.urlopen(f"{self.url}/stats", timeout=30) as r:
            return json.loads(r.read())

    def stop(self) -> dict:
        out, _ = self.proc.communicate(timeout=120)
        return json.loads(out.strip().splitlines()[-1])


# -- the endpoint's own ceiling ---------------------------------------------------------------------------
def bare_client_rate(url: str, alpaca: Path, n: int, concurrency: int) -> dict:
    """Referee requests (the run's most frequent kind, built with the run's own prompt code) sent by a plain
    OpenAI client at the run's total concurrency, each retried at once on an error, nothing stored. It
    posts and parses the JSON the way the gateway does (the SDK's raw POST), so the two differ only in
    what the run adds: pacing, retries with backoff, persistence, the flow's shards and Prefect."""
    import openai
    import pandas as pd

    from lion_core.discrimination.judging import JudgeItem, judge_request
    from lion_core.llm.gateway import HttpResponse, parse_completion

    df = pd.read_parquet(alpaca, columns=["instruction", "input", "output"]).iloc[:n]
    outs = df["output"].tolist()
    reqs = [judge_request(JudgeItem(f"bare-{i}", r.instruction, r.input, r.output, outs[(i + 1) % len(outs)] + " (b)"),
                          True, "lion", 0.2, 1.0, 512).api_messages() for i, r in enumerate(df.itertuples())]

    async def go() -> tuple[int, int, float]:
        queue = list(range(len(reqs)))
        ok = errors = 0
        async with openai.AsyncOpenAI(base_url=url, api_key="none", max_retries=0, timeout=60) as client:
            async def worker() -> None:
                nonlocal ok, errors
                while queue:
                    i = queue.pop()
                    while True:
                        try:
                            raw = await client.post("/chat/completions", cast_to=HttpResponse, body={
                                "model": "bare", "messages": reqs[i], "temperature": 0.2, "max_tokens": 512})
                            parse_completion(raw.json())
                            ok += 1
                            break
                        except (openai.OpenAIError, ValueError):
                            errors += 1
            start = time.monotonic()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            return ok, errors, time.monotonic() - start

    ok, errors, seconds = asyncio.run(go())
    return {"requests": ok, "errors_retried": errors, "seconds": round(seconds, 1), "per_second": round(ok / seconds, 1)}


# -- the run --------------------------------------------------------------------------------------------
def lion_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    return {**env, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PYTHONWARNINGS": "ignore"}


def stored_ok(store: Path, role: str) -> int:
    if not store.exists():
        return 0
    with sqlite3.connect(store) as db:
        return db.execute("SELECT COUNT(*) FROM responses WHERE role = ? AND status = 'ok'", (role,)).fetchone()[0]


def run_lion(config: Path, run_id: str, home: Path, log: Path, server: Server, kill_after_referee: int | None = None,
             resume: bool = False) -> dict:
    """`lion run` under a sampler of its process tree; with `kill_after_referee`, SIGKILL once the server has
    answered that many referee requests in this run. Returns wall time, peak memory, exit code and what the
    kill saw: the referee answers the server gave that the run had not stored when it died (sent back into
    a dead socket, or read but not yet written): the requests in flight, which a resume must ask again."""
    lion = Path(sys.executable).parent / "lion"
    cmd = [str(lion), "run", "--config", str(config), "--resume" if resume else "--run-id", run_id]
    before = server.stats()
    start = time.monotonic()
    out: dict = {}
    with open(log, "a") as fh:
        proc = subprocess.Popen(cmd, env=lion_env(home), stdout=fh, stderr=subprocess.STDOUT)
        with TreeSampler(proc.pid, interval_s=0.5) as sampler:
            while proc.poll() is None:
                time.sleep(0.25)
                s = server.stats()
                if resume and "first_request_s" not in out and s["arrived"] > before["arrived"]:
                    out["first_request_s"] = round(time.monotonic() - start, 1)
                referee = s["answered"].get("referee", 0) - before["answered"].get("referee", 0)
                if kill_after_referee is not None and referee >= kill_after_referee:
                    proc.send_signal(signal.SIGKILL)
                    proc.wait()
                    settled = server.stats()
                    while True:  # until the server has answered its backlog into the closed sockets
                        time.sleep(0.5)
                        now = server.stats()
                        if now["in_flight"] == 0 and now["answered"] == settled["answered"]:
                            break
                        settled = now
                    answered = settled["answered"].get("referee", 0) - before["answered"].get("referee", 0)
                    stored = stored_ok(Path(yaml.safe_load(config.read_text())["storage"]["response_store"]), "referee")
                    out.update(killed_at_referee=answered, stored_at_kill=stored, in_flight_at_kill=answered - stored)
                    break
            rc = proc.wait()
    return {"rc": rc, "seconds": round(time.monotonic() - start, 1), **sampler.figures(), **out}


# -- figures --------------------------------------------------------------------------------------------
def _ts(text: str | None) -> float | None:
    import datetime as dt

    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() if text else None


def prefect_figures(home: Path) -> dict:
    """Flow and task runs the run created, and where its time went, from Prefect's database: per stage
    sub-flow its wall time, and within it per kind of task (shards of one name together) the span from
    the first start to the last end and the number of task runs."""
    import re

    db = sqlite3.connect(home / "prefect.db")
    n_flows = db.execute("SELECT COUNT(*) FROM flow_run").fetchone()[0]
    n_tasks = db.execute("SELECT COUNT(*) FROM task_run").fetchone()[0]
    stages: dict[str, dict] = {}
    for flow_id, name, start, end in db.execute("SELECT id, name, start_time, end_time FROM flow_run"):
        if not (name.startswith("iter-") and start):
            continue
        entry = stages.setdefault(name, {"seconds": 0.0, "tasks": {}})
        entry["seconds"] = round(entry["seconds"] + ((_ts(end) or time.time()) - _ts(start)), 1)
        kinds: dict[str, list] = {}
        for tname, tstart, tend in db.execute(
                "SELECT name, start_time, end_time FROM task_run WHERE flow_run_id = ?", (flow_id,)):
            if tstart and tend:
                kinds.setdefault(re.sub(r"-shard-\d+$", "-shard-*", tname), []).append((_ts(tstart), _ts(tend)))
        for kind, spans in kinds.items():
            t = entry["tasks"].setdefault(kind, {"runs": 0, "seconds": 0.0})
            t["runs"] += len(spans)
            t["seconds"] = round(t["seconds"] + max(e for _, e in spans) - min(s for s, _ in spans), 1)
    return {"flow_runs": n_flows, "task_runs": n_tasks, "stages": stages}


def store_figures(store: Path, runs_root: Path, run_id: str, iterations: int) -> dict:
    """Pool sizes and content hashes per iteration, answers per role, store and run folder sizes."""
    from lion_core.store import RunStore

    rs = RunStore(str(runs_root), run_id)
    pools, digests = [], []
    for k in range(iterations + 1):
        rows = rs.read_table(rs.ref(k, "cache_pool")).to_pylist()
        pools.append(len(rows))
        h = hashlib.sha256()
        for r in sorted(rows, key=lambda r: r["id"]):
            h.update(json.dumps([r["id"], r["instruction"], r["input"], r["origin"], r["iteration"], r["parent_id"]]).encode())
        digests.append(h.hexdigest())
    db = sqlite3.connect(store)
    by_role = dict(db.execute("SELECT role, COUNT(*) FROM responses WHERE status = 'ok' GROUP BY role").fetchall())
    failed = dict(db.execute("SELECT role, COUNT(*) FROM responses WHERE status = 'failed' GROUP BY role").fetchall())
    size = sum(p.stat().st_size for p in store.parent.glob(store.name + "*"))
    run_size = sum(p.stat().st_size for p in (runs_root / run_id).rglob("*") if p.is_file())
    return {"pools": pools, "pool_sha256": digests, "stored_answers": by_role, "stored_failures": failed,
            "response_store_mb": round(size / 1e6, 1), "run_folder_mb": round(run_size / 1e6, 1)}


def gateway_rates(store: Path) -> dict:
    """Answers persisted per second by role and iteration window: rows over the span of their timestamps."""
    import datetime as dt

    db = sqlite3.connect(store)
    out = {}
    for role, stage in db.execute("SELECT DISTINCT role, stage FROM responses").fetchall():
        times = sorted(dt.datetime.fromisoformat(t).timestamp() for (t,) in db.execute(
            "SELECT created_at FROM responses WHERE role = ? AND stage = ? AND status = 'ok'", (role, stage)))
        if len(times) < 2:
            continue
        # split into bursts (a gap of more than 30 s: another iteration), rate = rows / busy time
        busy, lo = 0.0, times[0]
        for a, b in zip(times, times[1:]):
            if b - a > 30:
                busy += a - lo
                lo = b
        busy += times[-1] - lo
        out[f"{role}/{stage}"] = {"answers": len(times), "busy_seconds": round(busy, 1),
                                  "per_second": round(len(times) / busy, 1) if busy else None}
    return out


def referee_by_iteration(store: Path, home: Path) -> list[int]:
    """The referee answers stored during each iteration's discrimination sub-flow (fewer than two per
    Cache Pool item where the store already held a verdict: the same question and answers before)."""
    import bisect
    import datetime as dt

    windows: dict[int, list[tuple[float, float]]] = {}  # a killed and resumed iteration has two attempts
    with sqlite3.connect(home / "prefect.db") as db:
        for name, start, end in db.execute(
                "SELECT name, start_time, end_time FROM flow_run WHERE name LIKE 'iter-%-discrimination'"):
            if start:
                windows.setdefault(int(name.split("-")[1]), []).append((_ts(start), _ts(end) or time.time()))
    with sqlite3.connect(store) as db:
        times = sorted(dt.datetime.fromisoformat(t).timestamp() for (t,) in db.execute(
            "SELECT created_at FROM responses WHERE role = 'referee' AND status = 'ok'"))
    return [sum(bisect.bisect_right(times, b) - bisect.bisect_left(times, a) for a, b in windows[k])
            for k in sorted(windows)]


def summaries(runs_root: Path, run_id: str) -> list[dict]:
    from lion_core.report import read_summaries
    from lion_core.store import RunStore

    keep = ("iteration", "train_pool", "cache_pool", "hard", "easy", "unresolved", "accepted", "next_cache_pool",
            "generation_requests", "rouge_filter_seconds", "cost_usd")
    return [{k: getattr(s, k) for k in keep} for s in read_summaries(RunStore(str(runs_root), run_id))]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--alpaca", type=Path, default=default_alpaca(), help="the 52K Alpaca data (parquet)")
    ap.add_argument("--seeds", type=int, default=None, help="use the first N rows (default: all)")
    ap.add_argument("--iterations", type=int, default=3)
    ap.add_argument("--new", type=int, default=6000, help="new instructions per iteration")
    ap.add_argument("--latency-s", type=float, default=0.0, help="the endpoint's latency per request")
    ap.add_argument("--fault-rate", type=float, default=0.05)
    ap.add_argument("--hard-share", type=float, default=0.4)
    ap.add_argument("--concurrency", type=int, default=None,
                    help="each role's max_concurrency (default: configs/openai.yaml's teacher's)")
    ap.add_argument("--train-steps", type=int, default=20, help="training.max_steps per iteration")
    ap.add_argument("--max-new-tokens", type=int, default=16, help="student answer length cap")
    ap.add_argument("--student-batch", type=int, default=128)
    ap.add_argument("--bare-requests", type=int, default=20000)
    ap.add_argument("--shards-in-flight", type=int, default=None,
                    help="orchestration.shards_in_flight_per_key (default: configs/openai.yaml's)")
    ap.add_argument("--kill-at", choices=["referee"], default=None)
    ap.add_argument("--reference", type=Path, help="JSON of an uninterrupted run with the same settings")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if args.concurrency is None:
        args.concurrency = yaml.safe_load((REPO / "configs" / "openai.yaml").read_text())["teacher"]["rate_limits"][
            "max_concurrency"]

    work = args.workdir or Path(os.environ.get("TMPDIR", "/tmp")) / f"lion-paper-scale-{time.strftime('%Y%m%d-%H%M%S')}"
    work.mkdir(parents=True, exist_ok=True)
    seeds = work / "seeds.parquet"
    n_seeds = write_seeds(args.alpaca, args.seeds, seeds)
    student = make_student(work / "student")
    server = Server(args.alpaca, args.latency_s, args.fault_rate, args.hard_share)
    settings = {k: getattr(args, k) for k in ("seeds", "iterations", "new", "latency_s", "fault_rate", "hard_share",
                                              "concurrency", "train_steps", "max_new_tokens", "student_batch",
                                              "shards_in_flight")}
    result: dict = {"settings": settings, "seed_rows": n_seeds, "workdir": str(work)}
    try:
        config = write_config(work, server.url, seeds, student, args)
        in_flight = args.concurrency  # a role's max_concurrency is shared by its shards in flight
        print(f"[paper-scale] {n_seeds} seeds, {args.iterations} iterations, {args.new} new each; endpoint {server.url}",
              flush=True)
        result["bare_client"] = bare_client_rate(server.url, args.alpaca, args.bare_requests, in_flight)
        print(f"[paper-scale] bare client: {result['bare_client']}", flush=True)
        reference = json.loads(args.reference.read_text()) if args.reference else None
        if args.kill_at and reference is None:
            reference = main([*_without_kill(argv), "--workdir", str(work / "reference")])
        run_id = "paper-scale"
        home = work / "prefect"
        log = work / "lion.log"
        answered_before = server.stats()["answered"]
        if args.kill_at:
            # iteration 0's referee answers, then half of iteration 1's, as the uninterrupted run got them
            per_iteration = reference.get("referee_by_iteration") or [2 * n for n in reference["pools"]]
            target = per_iteration[0] + per_iteration[1] // 2
            killed = run_lion(config, run_id, home, log, server, kill_after_referee=target)
            print(f"[paper-scale] killed: {killed}", flush=True)
            resumed = run_lion(config, run_id, home, log, server, resume=True)
            result.update(killed=killed, resumed=resumed,
                          wall_seconds=round(killed["seconds"] + resumed["seconds"], 1),
                          peak_rss_gb=round(max(killed["peak_rss_sum_mb"], resumed["peak_rss_sum_mb"]) / 1024, 2))
            ok = resumed["rc"] == 0
            if "in_flight_at_kill" not in killed:
                raise SystemExit(f"the run ended before {target} referee answers: nothing was killed; see {log}")
        else:
            ran = run_lion(config, run_id, home, log, server)
            result.update(run=ran, wall_seconds=ran["seconds"], peak_rss_gb=round(ran["peak_rss_sum_mb"] / 1024, 2))
            ok = ran["rc"] == 0
        answered = {r: n - answered_before.get(r, 0) for r, n in server.stats()["answered"].items()}
        result["answered_by_server"] = answered
        if not ok:
            raise SystemExit(f"lion run failed; see {log}")
        result.update(store_figures(work / "responses.sqlite", work / "runs", run_id, args.iterations))
        result["iterations"] = summaries(work / "runs", run_id)
        result["prefect"] = prefect_figures(home)
        result["referee_by_iteration"] = referee_by_iteration(work / "responses.sqlite", home)
        result["gateway"] = gateway_rates(work / "responses.sqlite")
        referee = result["gateway"].get("referee/discrimination", {}).get("per_second")
        result["gateway_fraction_of_bare"] = round(referee / result["bare_client"]["per_second"], 3) if referee else None
        if args.kill_at:
            extra = {r: answered.get(r, 0) - reference["answered_by_server"].get(r, 0) for r in answered}
            paid_twice = sum(max(0, n) for n in extra.values())
            result.update(paid_twice=paid_twice, paid_twice_by_role=extra,
                          paid_twice_beyond_in_flight=max(0, paid_twice - result["killed"]["in_flight_at_kill"]),
                          pools_identical=result["pool_sha256"] == reference["pool_sha256"],
                          resume_first_request_s=result["resumed"].get("first_request_s"))
    finally:
        result["server"] = server.stop()
    report(result)
    if args.json:
        print(json.dumps(result))
    return result


def _without_kill(argv: list[str] | None) -> list[str]:
    out, skip = [], False
    for a in argv if argv is not None else sys.argv[1:]:
        if skip:
            skip = False
            continue
        if a in ("--kill-at", "--reference", "--workdir"):
            skip = True
            continue
        if a.startswith(("--kill-at=", "--reference=", "--workdir=")):
            continue
        if a != "--json":
            out.append(a)
    return out


def report(r: dict) -> None:
    print(f"[paper-scale] pools per iteration: {r.get('pools')}")
    print(f"[paper-scale] wall {r.get('wall_seconds')} s, peak RSS (process tree) {r.get('peak_rss_gb')} GB")
    print(f"[paper-scale] gateway vs bare client: {r.get('gateway_fraction_of_bare')} "
          f"(bare {r.get('bare_client', {}).get('per_second')} req/s)")
    for key in ("prefect", "gateway", "iterations", "response_store_mb", "run_folder_mb", "answered_by_server"):
        print(f"[paper-scale] {key}: {r.get(key)}")
    if "paid_twice" in r:
        print(f"[paper-scale] kill: paid twice {r['paid_twice']}, beyond those in flight {r['paid_twice_beyond_in_flight']} "
              f"(answered by the server but not stored when the run died: {r['killed'].get('in_flight_at_kill')}); "
              f"pools identical: {r['pools_identical']}; "
              f"resume's first request after {r['resume_first_request_s']} s")


if __name__ == "__main__":
    main()
