"""bench/api_cost.py plans the paper's run and prices it both ways; its last line is one JSON object."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_cost_benchmark_prices_the_papers_calls_interactive_and_in_batches(shared_data):
    alpaca = shared_data / "stanford_alpaca" / "alpaca_data_52k_en_via_open-chinese.parquet"
    out = subprocess.run([sys.executable, str(REPO / "bench" / "api_cost.py"), "--data", str(alpaca), "--rows", "300",
                          "--json"],
                         capture_output=True, text=True, check=True, cwd=REPO, timeout=300).stdout
    figures = json.loads(out.strip().splitlines()[-1])
    roles = figures["roles"]
    # the paper's schedule: 70K teacher answers, two verdicts per Cache Pool item (52K + 58K + 64K) and re-asks
    assert roles["teacher"]["calls"] == 70_000 and figures["cache_pool_sizes"] == [52_000, 58_000, 64_000]
    assert roles["referee"]["calls"] == round(2 * 52_000 * 1.02) + round(2 * 58_000 * 1.02) + round(2 * 64_000 * 1.02)
    assert roles["generator"]["calls"] == 3 * 12_000
    assert figures["calls_total"] == sum(r["calls"] for r in roles.values())
    assert 0 < figures["cost_batch_usd"] < figures["cost_interactive_usd"]
    assert figures["prices_per_million"]["batch"] == [0.25, 0.75]  # the config's default: half of the price
    assert abs(figures["cost_batch_usd"] * 2 - figures["cost_interactive_usd"]) < 0.05
    assert all(r["prompt_tokens_mean"] > 0 and r["completion_tokens_mean"] > 0 for r in roles.values())
    assert "baseline (interactive" in out
