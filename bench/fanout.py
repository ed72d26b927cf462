"""Fan-out throughput against a rate-limited loopback endpoint, versus the official code's pacing.

A loopback server (another process) answers after a fixed latency and enforces a requests/minute
limit over short windows, answering 429 with Retry-After beyond it. The gateway is configured with
the same limit. Reported: achieved requests/minute as a fraction of the limit, the server's 429 count,
the client's CPU time per request, and, measured in the same run, the official code's pacing (one
request, then a fixed sleep) on the first few requests of the same batch.

    python bench/fanout.py --json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import openai

from lion_core.config import ApiRole, RateLimits, RetryPolicy
from lion_core.llm import ChatRequest, Endpoint, Gateway, ResponseStore

REPO = Path(__file__).resolve().parents[1]  # the loopback fault server lives with the tests: run it from here


def start_server(rpm: int, latency_s: float) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fault_server", "--requests-per-minute", str(rpm), "--latency-s", str(latency_s)], cwd=REPO,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    port = int(proc.stdout.readline())
    return proc, f"http://127.0.0.1:{port}/v1"


def stop_server(proc: subprocess.Popen) -> dict:
    out, _ = proc.communicate(timeout=30)
    return json.loads(out.strip().splitlines()[-1])


def gateway_run(url: str, rpm: int, n: int, concurrency: int) -> dict:
    cfg = ApiRole(base_url=url, model="bench", rate_limits=RateLimits(requests_per_minute=rpm, max_concurrency=concurrency),
                  retry=RetryPolicy(max_attempts=6, initial_backoff_s=0.5, max_backoff_s=5, request_timeout_s=30))
    ep = Endpoint(role="teacher", endpoint_id="bench", model="bench", base_url=url, api_model="bench", config=cfg)
    reqs = [ChatRequest.of([("user", f"bench request {i}")], max_tokens=16) for i in range(n)]
    with tempfile.TemporaryDirectory() as tmp, ResponseStore(str(Path(tmp) / "r.sqlite")) as store:
        gw = Gateway(ep, store)
        cpu0, t0 = time.process_time(), time.perf_counter()
        results = gw.run_sync(reqs, "bench")
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return {"ok": sum(r.ok for r in results), "elapsed_s": elapsed, "cpu_s": cpu,
            "calls": gw.accounting.row("teacher", "bench").calls}


def official_pacing(url: str, n: int, sleep_s: float) -> float:
    """One request at a time, then a fixed sleep (the official code slept 20 s): requests per minute."""
    client = openai.OpenAI(base_url=url, api_key="no-key", max_retries=0)
    t0 = time.perf_counter()
    for i in range(n):
        client.chat.completions.create(model="bench", messages=[{"role": "user", "content": f"bench request {i}"}],
                                       max_tokens=16)
        time.sleep(sleep_s)
    return n / (time.perf_counter() - t0) * 60


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rpm", type=int, default=1200, help="limit enforced by the server and configured in the client")
    ap.add_argument("--requests", type=int, default=600)
    ap.add_argument("--latency-s", type=float, default=0.2)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--baseline-requests", type=int, default=3)
    ap.add_argument("--baseline-sleep-s", type=float, default=20.0)
    ap.add_argument("--json", action="store_true", help="end with one JSON line (always printed)")
    args = ap.parse_args()

    proc, url = start_server(args.rpm, args.latency_s)
    try:
        run = gateway_run(url, args.rpm, args.requests, args.concurrency)
    finally:
        server = stop_server(proc)
    achieved_rpm = run["ok"] / run["elapsed_s"] * 60
    # the baseline gets its own server, so its requests do not share the window with the run above
    proc, url = start_server(args.rpm, args.latency_s)
    try:
        baseline_rpm = official_pacing(url, args.baseline_requests, args.baseline_sleep_s)
    finally:
        stop_server(proc)

    result = {
        "configured_rpm": args.rpm,
        "requests": args.requests,
        "answered": run["ok"],
        "elapsed_s": round(run["elapsed_s"], 3),
        "achieved_rpm": round(achieved_rpm, 1),
        "achieved_fraction": round(achieved_rpm / args.rpm, 4),
        "rate_limited_responses": server["outcomes"].get("429-rate", 0),
        "calls": run["calls"],
        "client_cpu_ms_per_request": round(run["cpu_s"] / args.requests * 1000, 3),
        "latency_s": args.latency_s,
        "baseline_requests_per_minute": round(baseline_rpm, 2),
        "baseline_sleep_s": args.baseline_sleep_s,
        "baseline_requests_measured": args.baseline_requests,
        "speedup_vs_baseline": round(achieved_rpm / baseline_rpm, 1),
    }
    print(f"gateway: {run['ok']}/{args.requests} answered in {run['elapsed_s']:.1f}s = {achieved_rpm:.0f} req/min "
          f"({result['achieved_fraction']:.1%} of the {args.rpm} limit), {result['rate_limited_responses']} x 429, "
          f"{result['client_cpu_ms_per_request']} ms client CPU per request")
    print(f"baseline (one request, then {args.baseline_sleep_s:g} s sleep; {args.baseline_requests} requests): "
          f"{baseline_rpm:.2f} req/min")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
