"""The response store on SQLite and on PostgreSQL, under the gateway's fan-out and alone.

For each backend (a SQLite file in a temp dir; a throwaway PostgreSQL server started here with
PostgreSQL's default durability settings, `tests.postgres.PostgresServer(fast=False)`), on a fresh
store each time:

1. end to end: `--requests` requests through `Gateway.run_sync` against a zero-latency loopback
   OpenAI-compatible server (`tests.fault_server`, another process, no faults, no limit), the gateway's
   limits lifted out of the way (`--rpm`, `--concurrency`): answers persisted per second (requests /
   wall time). Baseline in the same run: the same batch through the same gateway with a store that keeps
   nothing (HTTP and the gateway's own work only): the fastest fan-out the gateway reaches here;
2. the latency a worker sees: from handing its answer to the batch's store lane to the lane saying it is
   stored (p50/p95/p99), and every store call the batch makes (claims and look-ups a chunk at a time,
   answers written in groups: lion_core/llm/store_lane.py), with the rows per call; also the CPU the
   PostgreSQL server used per answer (it shares this machine's cores with the gateway and the API);
3. the store alone, no HTTP, on one connection: one request at a time (claim, look-up, answer), and
   grouped as a busy batch groups them (claims 64 at a time, answers 8).

Verdict: PostgreSQL keeps up if the store alone, grouped, persists at least as many answers per second as
the fastest fan-out of 1 (no store).

Runs 1-2 are made `--repeats` times per backend, interleaved (no store, SQLite, PostgreSQL, then again), and
the run with the median rate is reported (a shared machine is noisy). The PostgreSQL server is stopped at
the end, on an error too.

    .venv/bin/python bench/store_backends.py --json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]  # the loopback server and the PostgreSQL harness live with the tests
sys.path.insert(0, str(REPO))

from lion_core.config import ApiRole, RateLimits, RetryPolicy  # noqa: E402
from lion_core.llm import ChatRequest, ChatResult, Endpoint, Gateway, ResponseStore  # noqa: E402
from lion_core.llm.claims import Holder  # noqa: E402
from lion_core.llm.responses import StoredCall, Write  # noqa: E402
from lion_core.llm.store_lane import StoreLane  # noqa: E402
from tests.postgres import PostgresServer  # noqa: E402

PASSWORD_ENV = "LION_STORE_PASSWORD"
STORE_OPS = ("claim_many", "lookup_many", "write_many", "release", "release_all", "renew", "successes")
"""The store calls a gateway batch makes (lion_core/llm/store_lane.py): claims and look-ups a chunk of
requests at a time, answers written in groups (each with its claim's release), the batch's first look-up
of all its keys (`successes`)."""


# -- the loopback endpoint ------------------------------------------------------------------------------
def start_server() -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "tests.fault_server"], cwd=REPO,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    port = int(proc.stdout.readline())
    return proc, f"http://127.0.0.1:{port}/v1"


def stop_server(proc: subprocess.Popen) -> dict:
    out, _ = proc.communicate(timeout=30)
    return json.loads(out.strip().splitlines()[-1])


# -- stores ---------------------------------------------------------------------------------------------
class NoStore:
    """What the gateway asks of a store, keeping nothing: the baseline's HTTP-only gateway."""

    lease_s = 60.0
    dialect = "none"

    def successes(self, keys: Any) -> dict:
        return {}

    def claim_many(self, keys: Any, holder: str) -> set[str]:
        return set(keys)

    def lookup_many(self, keys: Any) -> dict:
        return {}

    def write_many(self, writes: Any, holder: str) -> None:
        pass

    def release(self, key: str, holder: str) -> None:
        pass

    def release_all(self, holder: str) -> None:
        pass

    def renew(self, holder: str) -> None:
        pass

    def close(self) -> None:
        pass


class StoreTimer:
    """Times every store call of a batch (on the instance: each call's duration and rows), and the write
    latency a worker sees: from handing its answer to the lane to the lane saying it is stored, the wait for
    the write before it included."""

    def __init__(self, store: Any):
        self.ms: dict[str, list[float]] = defaultdict(list)
        self.rows: dict[str, list[int]] = defaultdict(list)
        self.write_wait_ms: list[float] = []
        for op in STORE_OPS:
            setattr(store, op, self._wrap(op, getattr(store, op)))
        self._lane_write = StoreLane.write
        timer = self

        async def timed_write(lane: StoreLane, *args: Any, **kw: Any) -> None:
            t0 = time.perf_counter()
            try:
                await timer._lane_write(lane, *args, **kw)
            finally:
                timer.write_wait_ms.append((time.perf_counter() - t0) * 1000)
        StoreLane.write = timed_write

    def restore(self) -> None:
        StoreLane.write = self._lane_write

    def _wrap(self, op: str, fn: Callable) -> Callable:
        def timed(*args: Any, **kw: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kw)
            finally:
                self.ms[op].append((time.perf_counter() - t0) * 1000)
                if args and isinstance(args[0], (list, set, tuple, dict)):
                    self.rows[op].append(len(args[0]))
        return timed

    def figures(self, wall_s: float, n: int) -> dict:
        ops = {op: {**summary(v), "rows": sum(self.rows[op]),
                    "rows_per_call": round(statistics.fmean(self.rows[op]), 1) if self.rows[op] else None}
               for op, v in self.ms.items()}
        total = sum(sum(v) for v in self.ms.values())
        return {"ops_ms": ops, "write_latency_ms": summary(self.write_wait_ms),
                "store_ms_per_request": round(total / n, 3), "store_ms_total": round(total, 1),
                "store_share_of_wall": round(total / 1000 / wall_s, 4)}


def summary(values: list[float]) -> dict:
    if not values:
        return {"count": 0}
    s = sorted(values)

    def q(p: float) -> float:
        return round(s[min(len(s) - 1, int(p * len(s)))], 3)
    return {"count": len(s), "mean": round(statistics.fmean(s), 3), "p50": q(0.50), "p95": q(0.95), "p99": q(0.99),
            "max": round(s[-1], 3)}


# -- the measurements -----------------------------------------------------------------------------------
def endpoint(url: str, rpm: int, concurrency: int) -> Endpoint:
    cfg = ApiRole(base_url=url, model="bench",
                  rate_limits=RateLimits(requests_per_minute=rpm, tokens_per_minute=rpm * 1000,
                                         max_concurrency=concurrency, adaptive=False),
                  retry=RetryPolicy(max_attempts=6, initial_backoff_s=0.05, max_backoff_s=1, request_timeout_s=60))
    return Endpoint(role="teacher", endpoint_id="bench", model="bench", base_url=url, api_model="bench", config=cfg)


def requests(n: int, salt: str) -> list[ChatRequest]:
    return [ChatRequest.of([("user", f"bench request {salt} {i}")], max_tokens=16) for i in range(n)]


def gateway_run(ep: Endpoint, store: Any, n: int, salt: str, timed: bool) -> dict:
    timer = StoreTimer(store) if timed else None
    gw = Gateway(ep, store)
    reqs = requests(n, salt)
    cpu0, t0 = time.process_time(), time.perf_counter()
    try:
        results = gw.run_sync(reqs, "bench")
    finally:
        if timer is not None:
            timer.restore()
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    ok = sum(r.ok for r in results)
    out = {"requests": n, "answered": ok, "elapsed_s": round(wall, 3), "answers_per_s": round(ok / wall, 1),
           "cpu_ms_per_request": round(cpu / n * 1000, 3)}
    if timer is not None:
        out.update(timer.figures(wall, n))
    return out


def raw_run(store: ResponseStore, m: int, salt: str) -> dict:
    """The store's calls for one request at a time, without HTTP and without grouping: claim, look-up, the
    answer with the claim's release; one connection. What the store alone sustains when nothing is grouped."""
    call = StoredCall(role="teacher", stage="bench", endpoint="bench", model="bench")
    reqs = requests(m, salt)
    items = [(r, ChatResult(key=r.key("bench", "bench"), ok=True, text=f"Answer to: bench request {salt} {i}",
                            finish_reason="stop", prompt_tokens=12, completion_tokens=8, attempts=1))
             for i, r in enumerate(reqs)]
    holder = Holder.new().name
    t0 = time.perf_counter()
    for req, res in items:
        store.claim_many([res.key], holder)
        store.lookup_many([res.key])
        store.put_success(call, req, res, 0.001, release=holder)
    wall = time.perf_counter() - t0
    stored = store.counts().get("ok", 0)
    if stored != m:
        raise RuntimeError(f"raw loop: {stored} of {m} answers stored")
    return {"keys": m, "elapsed_s": round(wall, 3), "answers_per_s": round(m / wall, 1),
            "ms_per_answer": round(wall / m * 1000, 3)}


def grouped_run(store: ResponseStore, m: int, salt: str, claim_chunk: int = 64, write_group: int = 8) -> dict:
    """The store's calls as a busy gateway batch makes them, without HTTP: claims and look-ups `claim_chunk` at
    a time, answers (with their claims' release) in groups of `write_group` (about what the PostgreSQL runs
    above group); one connection. What the store alone sustains for the gateway."""
    call = StoredCall(role="teacher", stage="bench", endpoint="bench", model="bench")
    reqs = requests(m, salt)
    items = [(r, ChatResult(key=r.key("bench", "bench"), ok=True, text=f"Answer to: bench request {salt} {i}",
                            finish_reason="stop", prompt_tokens=12, completion_tokens=8, attempts=1))
             for i, r in enumerate(reqs)]
    holder = Holder.new().name
    t0 = time.perf_counter()
    for i in range(0, m, claim_chunk):
        chunk = items[i:i + claim_chunk]
        won = store.claim_many([res.key for _, res in chunk], holder)
        store.lookup_many(won)
        for j in range(0, len(chunk), write_group):
            store.write_many([Write("ok", call, req, res, 0.001) for req, res in chunk[j:j + write_group]], holder)
    wall = time.perf_counter() - t0
    stored = store.counts().get("ok", 0)
    if stored != m:
        raise RuntimeError(f"grouped loop: {stored} of {m} answers stored")
    return {"keys": m, "claim_chunk": claim_chunk, "write_group": write_group, "elapsed_s": round(wall, 3),
            "answers_per_s": round(m / wall, 1), "ms_per_answer": round(wall / m * 1000, 3)}


def postgres_cpu_s() -> float:
    """CPU seconds used so far by every PostgreSQL server process of this machine (its backends included):
    the server shares this machine's cores with the gateway and the loopback API."""
    tick, total = os.sysconf("SC_CLK_TCK"), 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        if "(postgres)" in text:
            fields = text.rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


def median_run(runs: list[dict], rate: str = "answers_per_s") -> dict:
    """The run with the median rate (the lower middle of an even count), with every run's rate beside it."""
    ordered = sorted(runs, key=lambda r: r[rate])
    return {**ordered[(len(ordered) - 1) // 2], "runs_" + rate: [r[rate] for r in runs]}


def postgres_settings(store: ResponseStore) -> dict:
    """The server's durability settings as configured (pg_settings.reset_val: what a session starts with), and
    synchronous_commit in the store's own session (ResponseStore(durable=False) turns it off there)."""
    db = store.connect()
    try:
        names = ("fsync", "synchronous_commit", "full_page_writes", "wal_sync_method", "server_version")
        rows = db.execute(f"SELECT name, reset_val FROM pg_settings WHERE name IN ({','.join('?' * len(names))})", names)
        settings = dict(rows)
    finally:
        db.close()
    settings["store_session_synchronous_commit"] = store._db.one("SHOW synchronous_commit")[0]
    return settings


# -- the run --------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=3000, help="requests per end-to-end gateway run")
    ap.add_argument("--raw-keys", type=int, default=3000, help="keys in the store-only loop")
    ap.add_argument("--concurrency", type=int, default=64, help="the gateway's max_concurrency")
    ap.add_argument("--rpm", type=int, default=10_000_000, help="the gateway's requests_per_minute (out of the way)")
    ap.add_argument("--repeats", type=int, default=3, help="end-to-end runs per backend (the median is reported)")
    ap.add_argument("--durable", action="store_true", help="ResponseStore(durable=True): each commit waits for the disk")
    ap.add_argument("--json", action="store_true", help="end with one JSON line (always printed)")
    args = ap.parse_args(argv)

    result: dict = {"settings": {k: getattr(args, k) for k in ("requests", "raw_keys", "concurrency", "rpm", "repeats",
                                                               "durable")}}
    e2e: dict[str, list[dict]] = defaultdict(list)
    raw: dict[str, dict] = {}
    saved_password = os.environ.get(PASSWORD_ENV)
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="lion-store-bench-")))
        proc, url = start_server()
        server_figures: dict = {}
        stack.callback(lambda: server_figures.update(stop_server(proc)))
        pg = stack.enter_context(PostgresServer(fast=False))  # PostgreSQL's default durability: fsync on
        os.environ[PASSWORD_ENV] = pg.password
        stack.callback(lambda: os.environ.pop(PASSWORD_ENV) if saved_password is None
                       else os.environ.__setitem__(PASSWORD_ENV, saved_password))

        def open_store(backend: str) -> ResponseStore:
            name = f"lion_bench_{uuid.uuid4().hex[:12]}"
            location = str(tmp / f"{name}.sqlite") if backend == "sqlite" else pg.create_database(name)
            return ResponseStore(location, durable=args.durable, password_env=PASSWORD_ENV)

        ep = endpoint(url, args.rpm, args.concurrency)
        # one unmeasured run first: the client's and the server's first-call set-up is not a store's cost
        gateway_run(ep, NoStore(), min(200, args.requests), "warm-up", timed=False)
        for rep in range(args.repeats):
            e2e["no-store"].append(gateway_run(ep, NoStore(), args.requests, f"none-{rep}", timed=False))
            for backend in ("sqlite", "postgresql"):
                with open_store(backend) as store:
                    if backend == "postgresql" and "postgresql" not in result:
                        result["postgresql"] = postgres_settings(store)
                    cpu0 = postgres_cpu_s()
                    run = gateway_run(ep, store, args.requests, f"{backend}-{rep}", timed=True)
                    if backend == "postgresql":
                        run["server_cpu_ms_per_request"] = round((postgres_cpu_s() - cpu0) / args.requests * 1000, 3)
                    e2e[backend].append(run)
        for backend in ("sqlite", "postgresql"):
            with open_store(backend) as store:
                raw[backend] = raw_run(store, args.raw_keys, f"raw-{backend}")
            with open_store(backend) as store:
                raw[backend]["grouped"] = grouped_run(store, args.raw_keys, f"grouped-{backend}")
    result["server"] = server_figures

    result["no_store"] = median_run(e2e["no-store"])
    result["backends"] = {b: {"gateway": median_run(e2e[b]), "store_only": raw[b]} for b in ("sqlite", "postgresql")}
    rate = {b: result["backends"][b]["gateway"]["answers_per_s"] for b in ("sqlite", "postgresql")}
    base = result["no_store"]["answers_per_s"]
    result["fractions"] = {"postgresql_of_sqlite": round(rate["postgresql"] / rate["sqlite"], 4),
                           "postgresql_of_no_store": round(rate["postgresql"] / base, 4),
                           "sqlite_of_no_store": round(rate["sqlite"] / base, 4)}
    fastest = max(r["answers_per_s"] for r in e2e["no-store"])
    capacity = result["backends"]["postgresql"]["store_only"]["grouped"]["answers_per_s"]
    result["fastest_fan_out_per_s"] = fastest
    result["rule"] = ("PostgreSQL keeps up if the store alone, called as a busy gateway batch calls it, persists at least "
                      "as many answers per second as the fastest fan-out the gateway reached in this run (no store)")
    result["keeps_up"] = capacity >= fastest
    report(result, capacity / fastest)
    print(json.dumps(result))
    return result


def report(r: dict, fraction: float) -> None:
    s = r["settings"]
    print(f"{s['requests']} requests per run, zero-latency loopback server, max_concurrency {s['concurrency']}, "
          f"{s['repeats']} run(s) per backend (median); store durable={s['durable']}")
    if "postgresql" in r:
        p = r["postgresql"]
        print(f"PostgreSQL {p['server_version']}: fsync={p['fsync']}, synchronous_commit={p['synchronous_commit']} "
              f"(the store's session: {p['store_session_synchronous_commit']}), full_page_writes={p['full_page_writes']}")
    print()
    print(f"{'end to end':<24}{'answers/s':>11}{'wall s':>9}{'CPU ms/req':>12}{'write ms p50':>14}"
          f"{'p95':>8}{'p99':>8}{'store ms/req':>14}{'store share':>13}")
    rows = [("no store (baseline)", r["no_store"])] + [(b, r["backends"][b]["gateway"]) for b in ("sqlite", "postgresql")]
    for name, g in rows:
        per = g.get("write_latency_ms", {})
        share = f"{g['store_share_of_wall']:.1%}" if "store_share_of_wall" in g else "-"
        print(f"{name:<24}{g['answers_per_s']:>11.1f}{g['elapsed_s']:>9.2f}{g['cpu_ms_per_request']:>12.3f}"
              f"{per.get('p50', '-'):>14}{per.get('p95', '-'):>8}{per.get('p99', '-'):>8}"
              f"{g.get('store_ms_per_request', '-'):>14}{share:>13}")
    print()
    print(f"{'store call (ms)':<24}" + "".join(f"{b + ' p50/p95/p99 (rows/call)':>40}" for b in ("sqlite", "postgresql")))
    for op in STORE_OPS:
        cells = []
        for b in ("sqlite", "postgresql"):
            o = r["backends"][b]["gateway"]["ops_ms"].get(op, {"count": 0})
            rows = f" ({o['rows_per_call']})" if o.get("rows_per_call") else ""
            cells.append(f"{o['p50']:.3f} / {o['p95']:.3f} / {o['p99']:.3f}{rows}" if o["count"] else "-")
        print(f"{op:<24}" + "".join(f"{c:>40}" for c in cells))
    print()
    print(f"{'store alone':<24}{'one at a time/s':>16}{'grouped/s':>11}   (claim, look-up, answer; grouped: claims 64 "
          "at a time, answers 8; one connection)")
    for b in ("sqlite", "postgresql"):
        o = r["backends"][b]["store_only"]
        print(f"{b:<24}{o['answers_per_s']:>16.1f}{o['grouped']['answers_per_s']:>11.1f}")
    pg = r["backends"]["postgresql"]["gateway"]
    print(f"PostgreSQL's server used {pg.get('server_cpu_ms_per_request', 0):.3f} ms CPU per answer in the end-to-end "
          "run, on the cores the gateway and the loopback API share")
    print()
    f = r["fractions"]
    print(f"PostgreSQL / SQLite end to end: {f['postgresql_of_sqlite']:.1%}; PostgreSQL / no store: "
          f"{f['postgresql_of_no_store']:.1%}; SQLite / no store: {f['sqlite_of_no_store']:.1%}")
    print(f"rule: {r['rule']}")
    print(f"verdict: PostgreSQL {'keeps up' if r['keeps_up'] else 'does NOT keep up'}: "
          f"{r['backends']['postgresql']['store_only']['grouped']['answers_per_s']:.0f} answers/s against a fan-out of "
          f"{r['fastest_fan_out_per_s']:.0f}/s ({fraction:.1f}x)")


if __name__ == "__main__":
    main()
