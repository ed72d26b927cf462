"""Fixed against adaptive rate limits, when the configured limit is three times what the server allows.

A loopback server (another process) answers after a fixed latency and enforces R requests/minute over
short windows (ceil(R/60) requests a second), answering 429 with Retry-After beyond it. The gateway is
configured with 3R, as a user who guessed too high would, and sends the same batch twice, each time to a
fresh server: first with the fixed limiter (`rate_limits.adaptive: false`), then with the adaptive one.
Reported for each: answered requests/minute over the whole run, first request to last answer, the
search for the limit included, as a fraction of R; the server's 429 count; the elapsed time; and the
levels (requests/minute) the limiter backed off to, as its log lines tell them.

    python bench/adaptive_limits.py --json
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lion_core.config import ApiRole, RateLimits, RetryPolicy
from lion_core.llm import ChatRequest, Endpoint, Gateway, ResponseStore

REPO = Path(__file__).resolve().parents[1]  # the loopback fault server lives with the tests: run it from here
TARGET_FRACTION = 0.9


def start_server(rpm: int, latency_s: float) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fault_server", "--requests-per-minute", str(rpm), "--latency-s", str(latency_s)],
        cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    port = int(proc.stdout.readline())
    return proc, f"http://127.0.0.1:{port}/v1"


def stop_server(proc: subprocess.Popen) -> dict:
    out, _ = proc.communicate(timeout=30)
    return json.loads(out.strip().splitlines()[-1])


class LevelLog(logging.Handler):
    """The limiter's log lines: the level each backoff went to."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.backoffs: list[int] = []

    def emit(self, record: logging.LogRecord) -> None:
        m = re.search(r"slow down: requests/minute \d+ -> (\d+)", record.getMessage())
        if m:
            self.backoffs.append(int(m.group(1)))


def run_limiter(real_rpm: int, configured_rpm: int, adaptive: bool, n: int, concurrency: int,
                latency_s: float) -> dict:
    proc, url = start_server(real_rpm, latency_s)
    cfg = ApiRole(base_url=url, model="bench",
                  rate_limits=RateLimits(requests_per_minute=configured_rpm, tokens_per_minute=10**9,
                                         max_concurrency=concurrency, adaptive=adaptive),
                  retry=RetryPolicy(max_attempts=10, initial_backoff_s=0.5, max_backoff_s=5, request_timeout_s=30))
    ep = Endpoint(role="teacher", endpoint_id="bench", model="bench", base_url=url, api_model="bench", config=cfg)
    reqs = [ChatRequest.of([("user", f"bench request {i}")], max_tokens=16) for i in range(n)]
    levels = LevelLog()
    logger = logging.getLogger("lion.gateway")
    logger.addHandler(levels)
    logger.setLevel(logging.INFO)
    try:
        with tempfile.TemporaryDirectory() as tmp, ResponseStore(str(Path(tmp) / "r.sqlite")) as store:
            t0 = time.perf_counter()
            results = Gateway(ep, store).run_sync(reqs, "bench")
            elapsed = time.perf_counter() - t0
    finally:
        logger.removeHandler(levels)
        server = stop_server(proc)
    ok = sum(r.ok for r in results)
    achieved = ok / elapsed * 60
    return {"adaptive": adaptive, "answered": ok, "elapsed_s": round(elapsed, 1), "achieved_rpm": round(achieved, 1),
            "fraction_of_real_limit": round(achieved / real_rpm, 3),
            "rate_limited_responses": server["outcomes"].get("429-rate", 0),
            "backoffs": len(levels.backoffs), "levels_after_backoffs": levels.backoffs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--real-rpm", type=int, default=1200, help="the limit the server enforces (R)")
    ap.add_argument("--factor", type=int, default=3, help="the client is configured with factor x R")
    ap.add_argument("--requests", type=int, default=1800, help="requests per limiter")
    ap.add_argument("--latency-s", type=float, default=0.05)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--json", action="store_true", help="end with one JSON line (always printed)")
    args = ap.parse_args()

    configured = args.factor * args.real_rpm
    runs = {name: run_limiter(args.real_rpm, configured, adaptive, args.requests, args.concurrency, args.latency_s)
            for name, adaptive in (("fixed", False), ("adaptive", True))}
    fixed, adaptive = runs["fixed"], runs["adaptive"]
    met = (adaptive["fraction_of_real_limit"] >= TARGET_FRACTION
           and adaptive["rate_limited_responses"] < fixed["rate_limited_responses"])
    for name, r in runs.items():
        print(f"{name:>8}: {r['answered']}/{args.requests} answered in {r['elapsed_s']:.1f}s = {r['achieved_rpm']:.0f} "
              f"req/min = {r['fraction_of_real_limit']:.1%} of the server's {args.real_rpm}, "
              f"{r['rate_limited_responses']} x 429, backoffs to {r['levels_after_backoffs'] or 'none'}")
    print(f"target: adaptive >= {TARGET_FRACTION:.0%} of the real limit with fewer 429s than fixed "
          f"(configured {configured} rpm, real {args.real_rpm}): {'met' if met else 'NOT met'}")
    print(json.dumps({"real_rpm": args.real_rpm, "configured_rpm": configured, "requests": args.requests,
                      "latency_s": args.latency_s, "concurrency": args.concurrency, "measured_over": "whole run",
                      "fixed": fixed, "adaptive": adaptive, "target_fraction": TARGET_FRACTION, "target_met": met}))


if __name__ == "__main__":
    main()
