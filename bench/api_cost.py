"""What the paper's three iterations cost through the API: interactive, and with the bulk roles (teacher,
referee, generator) in batch mode, planned with the project's own request builders and batch planner.

The plan follows the paper: 52K Alpaca instructions as the first Train and Cache Pool, 6K new instructions
per iteration (3K from hard and 3K from easy items, 1:1), three iterations, so the Cache Pool grows
52K -> 58K -> 64K and the run ends with 70K instructions, the last 6K trained in the final imitation.

- teacher: one answer per instruction, once (the Cache Pool's answers come from the response store);
- referee: two verdicts (both orders) per Cache Pool item per iteration, plus re-asks (`--reask-rate`);
- generator: 6K accepted per iteration at `--acceptance` of the draws.

Prompt tokens are the project's own estimate (`ChatRequest`: 4 characters a token) of the requests it
builds from the shipped Alpaca rows (the teacher prompt around each instruction; the referee prompt
around an instruction, its Alpaca answer as the teacher's and another row's answer as the student's; the
generator prompt around a seed). Completion tokens: the teacher's, the length of the Alpaca answers;
the generator's, the length of a seed (instruction and input) plus its two labels; the referee's reply is
`--referee-reply-tokens` (the shipped data has no verdicts). Instructions generated in later iterations
are priced as Alpaca rows drawn again. The batch count comes from `plan_batches` with the default
per-file limits (`batches`), and at the default enqueued-token cap (`at cap`: batches in turn, each
as large as the cap allows).

    python bench/api_cost.py [--rows 52000] [--json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import sys
import time
from pathlib import Path

import pandas as pd

from lion_core.config import ApiRole, BatchSettings, Price, RunConfig
from lion_core.discrimination.judging import JudgeItem, judge_request
from lion_core.generation.candidates import generator_request
from lion_core.llm.batches import plan_batches
from lion_core.llm.requests import ChatRequest
from lion_core.prompts import teacher_messages

DEFAULT_DATA = (Path(os.environ.get("LION_SHARED_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))
                / "stanford_alpaca" / "alpaca_data_52k_en_via_open-chinese.parquet")


def tokens(text: str) -> int:
    """The project's estimate: about 4 characters a token."""
    return len(text) // 4 + 1


def prompt_tokens(request: ChatRequest) -> int:
    return request.estimated_tokens() - (request.max_tokens or 256)


def measure(rows: list[dict], config: RunConfig, rng: random.Random) -> dict:
    """Mean prompt and completion tokens of each role's requests, built from the rows, and the requests."""
    t, r, g = config.teacher.sampling, config.referee.sampling, config.generator
    teacher = [ChatRequest.of(teacher_messages(x["instruction"], x["input"]), temperature=t.temperature, top_p=t.top_p,
                              max_tokens=t.max_tokens, tag=str(i)) for i, x in enumerate(rows)]
    others = rng.sample(range(len(rows)), len(rows))
    referee = []
    for i, x in enumerate(rows):
        item = JudgeItem(str(i), x["instruction"], x["input"], x["output"], rows[others[i]]["output"])
        for teacher_first in (True, False):
            referee.append(judge_request(item, teacher_first, config.referee.prompt_style, r.temperature, r.top_p,
                                         r.max_tokens))
    generator = [generator_request({"id": str(i), **x}, "hard" if i % 2 else "easy", g, sample_index=0, iteration=0)
                 for i, x in enumerate(rows)]
    return {
        "teacher": {"requests": teacher, "prompt": statistics.fmean(prompt_tokens(q) for q in teacher),
                    "completion": statistics.fmean(tokens(x["output"]) for x in rows)},
        "referee": {"requests": referee, "prompt": statistics.fmean(prompt_tokens(q) for q in referee)},
        "generator": {"requests": generator, "prompt": statistics.fmean(prompt_tokens(q) for q in generator),
                      "completion": statistics.fmean(tokens(f"New task: {x['instruction']}\nNew input: {x['input']}")
                                                     for x in rows)},
    }


def plan(seeds: int, new_per_iteration: int, iterations: int, acceptance: float, reask_rate: float) -> dict:
    """Calls per role and stage over the run (the paper's schedule)."""
    cache = [seeds + k * new_per_iteration for k in range(iterations)]
    draws = math.ceil(new_per_iteration / acceptance)
    return {
        "teacher": seeds + new_per_iteration * iterations,  # every instruction once; the Cache Pool's from the store
        "referee": sum(round(2 * c * (1 + reask_rate)) for c in cache),
        "generator": draws * iterations,
        "cache_pool_sizes": cache,
        "final_instructions": seeds + new_per_iteration * iterations,
    }


def price(calls: int, prompt: float, completion: float, p: Price) -> float:
    return calls * (prompt * p.prompt_per_million + completion * p.completion_per_million) / 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--rows", type=int, default=52_000, help="Alpaca rows the token means are measured on")
    ap.add_argument("--seeds", type=int, default=52_000)
    ap.add_argument("--new-per-iteration", type=int, default=6_000)
    ap.add_argument("--iterations", type=int, default=3)
    ap.add_argument("--acceptance", type=float, default=0.5, help="share of generator draws the ROUGE-L filter keeps")
    ap.add_argument("--reask-rate", type=float, default=0.02, help="referee re-asks per verdict (unparseable replies)")
    ap.add_argument("--referee-reply-tokens", type=float, default=150.0)
    ap.add_argument("--prompt-price", type=float, default=0.50, help="USD per million prompt tokens (gpt-3.5-turbo)")
    ap.add_argument("--completion-price", type=float, default=1.50, help="USD per million completion tokens")
    ap.add_argument("--rpm", type=int, default=3_500, help="requests per minute of the key, for the interactive time")
    ap.add_argument("--json", action="store_true", help="end with one JSON line")
    args = ap.parse_args()

    started = time.perf_counter()
    frame = pd.read_parquet(args.data, columns=["instruction", "input", "output"]).fillna("")
    rows = frame.head(args.rows).to_dict("records")
    config = RunConfig()
    measured = measure(rows, config, random.Random(0))
    measured["referee"]["completion"] = args.referee_reply_tokens
    calls = plan(args.seeds, args.new_per_iteration, args.iterations, args.acceptance, args.reask_rate)
    interactive = Price(prompt_per_million=args.prompt_price, completion_per_million=args.completion_price)
    # the config's own rule (batch.price, default half of price), as a run would account it
    batch = ApiRole(base_url="https://api.openai.com/v1", model="gpt-3.5-turbo", mode="batch", price=interactive).batch_price()
    settings = BatchSettings()
    roles = {}
    for role in ("teacher", "referee", "generator"):
        m = measured[role]
        reqs = m["requests"]
        # a full batch as plan_batches fills it (within the per-file request and byte limits), and the requests
        # the enqueued-token cap lets wait together (one batch at a time when a batch alone is over the cap)
        sample = [(str(i), q) for i, q in enumerate(reqs[:settings.max_requests_per_batch])]
        per_batch = len(plan_batches(sample, "gpt-3.5-turbo", settings, token_room=10**15)[0])
        per_cap = len([x for b in plan_batches(sample, "gpt-3.5-turbo", settings, settings.max_enqueued_tokens)
                       for x in b])
        roles[role] = {
            "calls": calls[role], "prompt_tokens_mean": round(m["prompt"], 1),
            "completion_tokens_mean": round(m["completion"], 1),
            "cost_interactive_usd": round(price(calls[role], m["prompt"], m["completion"], interactive), 2),
            "cost_batch_usd": round(price(calls[role], m["prompt"], m["completion"], batch), 2),
            "batches_at_least": math.ceil(calls[role] / per_batch),
            "batches_at_token_cap": math.ceil(calls[role] / per_cap),
        }
    calls_total = sum(r["calls"] for r in roles.values())
    out = {
        "calls_total": calls_total,
        "cost_interactive_usd": round(sum(r["cost_interactive_usd"] for r in roles.values()), 2),
        "cost_batch_usd": round(sum(r["cost_batch_usd"] for r in roles.values()), 2),
        "saving_usd": round(sum(r["cost_interactive_usd"] - r["cost_batch_usd"] for r in roles.values()), 2),
        "interactive_hours_at_rpm": round(calls_total / args.rpm / 60, 1),
        "rpm": args.rpm, "roles": roles, "cache_pool_sizes": calls["cache_pool_sizes"],
        "final_instructions": calls["final_instructions"], "measured_rows": len(rows),
        "prices_per_million": {"interactive": [args.prompt_price, args.completion_price],
                               "batch": [batch.prompt_per_million, batch.completion_per_million]},
        "max_enqueued_tokens": settings.max_enqueued_tokens,
        "assumptions": {"acceptance": args.acceptance, "reask_rate": args.reask_rate,
                        "referee_reply_tokens": args.referee_reply_tokens},
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(f"The paper's run: {args.seeds} seeds, +{args.new_per_iteration} per iteration x {args.iterations}, "
          f"Cache Pool {' -> '.join(map(str, calls['cache_pool_sizes']))}, {calls['final_instructions']} instructions")
    print(f"{'role':10} {'calls':>9} {'prompt tok':>11} {'compl tok':>10} {'interactive $':>14} {'batch $':>10} "
          f"{'batches':>8} {'at cap':>7}")
    for role, r in roles.items():
        print(f"{role:10} {r['calls']:>9} {r['prompt_tokens_mean']:>11} {r['completion_tokens_mean']:>10} "
              f"{r['cost_interactive_usd']:>14.2f} {r['cost_batch_usd']:>10.2f} "
              f"{r['batches_at_least']:>8} {r['batches_at_token_cap']:>7}")
    print(f"{'total':10} {calls_total:>9} {'':>11} {'':>10} {out['cost_interactive_usd']:>14.2f} "
          f"{out['cost_batch_usd']:>10.2f}")
    print(f"baseline (interactive, all roles): ${out['cost_interactive_usd']:.2f}, about "
          f"{out['interactive_hours_at_rpm']} h of calls at {args.rpm} RPM; batch mode: ${out['cost_batch_usd']:.2f} "
          f"(saves ${out['saving_usd']:.2f}), outside the per-minute limits")
    if args.json:
        print(json.dumps(out))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
