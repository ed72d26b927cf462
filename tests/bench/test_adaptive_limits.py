"""bench/adaptive_limits.py on a small batch: both limiters run against a server that allows a third of the
configured limit, and the last line is one JSON object with both sets of figures.

The full-size figures (the adaptive limiter at >= 0.9 of the real limit) take minutes and live in
bench/README.md; here the batch is too short for the search at its start to pay off, so what is checked is
that each limiter did what it is for: the fixed one kept to the configured limit and met 429s all along,
the adaptive one backed off below the real limit and met fewer."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_adaptive_limits_benchmark_runs_both_limiters_in_one_go():
    out = subprocess.run([sys.executable, str(REPO / "bench" / "adaptive_limits.py"), "--real-rpm", "1200",
                          "--requests", "150", "--json"],
                         capture_output=True, text=True, cwd=REPO, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    fixed, adaptive = figures["fixed"], figures["adaptive"]
    assert figures["configured_rpm"] == 3 * figures["real_rpm"] == 3600
    assert fixed["answered"] == adaptive["answered"] == 150
    assert fixed["backoffs"] == 0 and fixed["rate_limited_responses"] >= 5
    assert adaptive["backoffs"] >= 1 and min(adaptive["levels_after_backoffs"]) < 1200
    assert adaptive["rate_limited_responses"] < fixed["rate_limited_responses"]
    assert 0 < fixed["fraction_of_real_limit"] < 1 and 0 < adaptive["fraction_of_real_limit"] < 1.2
    assert "target: adaptive >= 90% of the real limit" in out.stdout
