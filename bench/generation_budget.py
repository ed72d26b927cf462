"""The generator's reply budget on real Alpaca seeds: ours (the whole rendered seed, instruction and
input) against the official code's (4 x the words of the instruction alone), measured in one run.

The generator is the loopback OpenAI-compatible server: it writes a new task as long as its example
(instruction and input alike) and cuts a reply off at max_tokens (about 4 characters a token) with
finish_reason "length", as a real endpoint does. Both budgets ask the same seeds.

    python bench/generation_budget.py [--seeds 600] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import pandas as pd

from lion_core.config import ApiRole, GeneratorConfig, LoopConfig, RateLimits
from lion_core.generation import candidates, rounds
from lion_core.llm import Endpoint, Gateway, ResponseStore
from lion_core.pools import make_row

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the loopback fault server lives with the tests, outside the package
from tests.fault_server import FaultServer  # noqa: E402

DEFAULT_DATA = (Path(os.environ.get("LION_SHARED_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))
                / "stanford_alpaca" / "alpaca_data_52k_en_via_open-chinese.parquet")


def official_budget(seed: dict, cfg: GeneratorConfig) -> int:
    """The official code's rule: 4 x the words of the seed instruction; its input is not counted."""
    return cfg.max_tokens_per_seed_word * len(seed["instruction"].split())


def run(seeds: list[dict], budget) -> dict:
    cfg = GeneratorConfig(max_instruction_words=1000)
    with FaultServer() as srv, tempfile.TemporaryDirectory() as tmp, ResponseStore(f"{tmp}/r.sqlite") as store, \
            mock.patch.object(candidates, "generator_max_tokens", budget):
        role = ApiRole(base_url=srv.url, model="m", rate_limits=RateLimits(requests_per_minute=100_000,
                                                                            tokens_per_minute=100_000_000))
        gw = Gateway(Endpoint(role="generator", endpoint_id="bench", model="m", base_url=srv.url, api_model="m",
                              config=role), store)
        started = time.perf_counter()
        res = rounds.generate(gw, hard_seeds=seeds, easy_seeds=[], cache_pool=seeds, next_iteration=1,
                                  loop=LoopConfig(new_instructions_per_iteration=len(seeds), hard_easy_ratio=(1, 1),
                                                  rouge_l_threshold=0.7, random_seed=0),
                                  cfg=cfg.model_copy(update={"request_budget_factor": 1.0, "max_rounds": 1}))
        seconds = time.perf_counter() - started
    rep = res.report
    return {"by_seed_input": {k: v.model_dump() for k, v in rep.by_seed_input.items()},
            "truncated_by_reason": rep.truncated_by_reason, "accepted": rep.accepted_total, "requests": rep.requests,
            "seconds": round(seconds, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--seeds", type=int, default=600)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    rows = pd.read_parquet(args.data).sample(args.seeds, random_state=0)
    seeds = [make_row(r.instruction, r.input, origin="seed", iteration=0) for r in rows.itertuples()]
    ours, official = run(seeds, candidates.generator_max_tokens), run(seeds, official_budget)
    with_input = sum(bool(s["input"].strip()) for s in seeds)
    print(f"{len(seeds)} Alpaca seeds, {with_input} ({with_input / len(seeds):.0%}) with an input; one draw each")
    print(f"{'budget':<34}{'truncated (with input)':>24}{'accepted from seeds with input':>32}{'accepted, all':>15}")
    for name, r in (("official: 4 x instruction words", official), ("ours: whole seed, floor, ceiling", ours)):
        w = r["by_seed_input"]["with_input"]
        print(f"{name:<34}{w['truncated']:>16} of {w['requests']:<5}{w['accepted']:>26} of {w['requests']:<5}"
              f"{r['accepted']:>10}")
    if args.json:
        print(json.dumps({"seeds": len(seeds), "with_input": with_input, "official": official, "ours": ours}))


if __name__ == "__main__":
    main()
