"""bench/store_backends.py on a tiny batch: the gateway end to end on SQLite and on a real PostgreSQL server
(default durability), the store-less baseline, each store call's latency and the store alone, all in one run
whose last line is one JSON object. The full-size figures take minutes; here only their presence is checked."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
OPS = ("claim_many", "lookup_many", "write_many")


@pytest.mark.slow
def test_the_store_backends_benchmark_measures_both_backends_and_the_baseline_in_one_go():
    out = subprocess.run([sys.executable, str(REPO / "bench" / "store_backends.py"), "--requests", "60",
                          "--raw-keys", "60", "--concurrency", "8", "--repeats", "1", "--json"],
                         capture_output=True, text=True, cwd=REPO, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    assert figures["no_store"]["answered"] == 60 and figures["no_store"]["answers_per_s"] > 0
    assert set(figures["backends"]) == {"sqlite", "postgresql"}
    for name, backend in figures["backends"].items():
        gateway = backend["gateway"]
        assert gateway["answered"] == 60 and gateway["answers_per_s"] > 0, name
        for op in OPS:  # the batch's claims, look-ups and writes, each row once
            o = gateway["ops_ms"][op]
            assert o["count"] >= 1 and o["rows"] == 60, (name, op, o)
            assert 0 < o["p50"] <= o["p95"] <= o["p99"]
        assert gateway["write_latency_ms"]["count"] == 60 and gateway["write_latency_ms"]["p50"] > 0
        assert 0 < gateway["store_share_of_wall"] < 1
        assert backend["store_only"]["keys"] == 60 and backend["store_only"]["answers_per_s"] > 0, name
        assert backend["store_only"]["grouped"]["answers_per_s"] > 0, name
    assert figures["backends"]["postgresql"]["gateway"]["server_cpu_ms_per_request"] > 0
    assert figures["postgresql"]["fsync"] == "on"  # PostgreSQL's default durability, not the tests' fast cluster
    assert figures["fractions"]["postgresql_of_sqlite"] > 0 and isinstance(figures["keeps_up"], bool)
    assert figures["keeps_up"] == (figures["backends"]["postgresql"]["store_only"]["grouped"]["answers_per_s"]
                                   >= figures["fastest_fan_out_per_s"])
    assert "fastest fan-out" in figures["rule"] and "verdict: PostgreSQL" in out.stdout
