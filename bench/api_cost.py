"""What the paper's three iterations cost through the API: interactive, and with the bulk roles (teacher,
referee, generator) in batch mode; the plan is `lion plan`'s (lion_core.planning), the batch counts the
project's own batch planner's.

The plan follows the paper: 52K Alpaca instructions as the first Train and Cache Pool, 6K new instructions
per iteration (3K from hard and 3K from easy items, 1:1), three iterations, so the Cache Pool grows
52K -> 58K -> 64K and the run ends with 70K instructions, the last 6K trained in the final imitation.
Prompt tokens are measured on the requests the run builds from the Alpaca rows; the teacher's completions
are the Alpaca answers' length; the referee's reply is `--referee-reply-tokens`; the generator's draws at
`--acceptance`. The batch count comes from `plan_batches` with the default per-file limits (`batches`),
and at the default enqueued-token cap (`at cap`: batches in turn, each as large as the cap allows).

    python bench/api_cost.py [--rows 52000] [--json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

from lion_core.config import ApiRole, BatchSettings, Price, parse_config
from lion_core.llm.batches import plan_batches
from lion_core.planning import Assumptions, make_plan, measure, role_requests
from lion_core.seeds import load_seeds

DEFAULT_DATA = (Path(os.environ.get("LION_SHARED_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))
                / "stanford_alpaca" / "alpaca_data_52k_en_via_open-chinese.parquet")


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
    seeds = load_seeds(args.data).rows[:args.rows]
    price = Price(prompt_per_million=args.prompt_price, completion_per_million=args.completion_price)
    role = {"base_url": "https://api.openai.com/v1", "model": "gpt-3.5-turbo", "price": price.model_dump(),
            "rate_limits": {"requests_per_minute": args.rpm, "tokens_per_minute": 10**9}}
    config = parse_config({"teacher": role, "referee": role, "generator": role,
                           "loop": {"iterations": args.iterations, "new_instructions_per_iteration": args.new_per_iteration}})
    assumptions = Assumptions(acceptance=args.acceptance, reask_rate=args.reask_rate,
                              referee_reply_tokens=int(args.referee_reply_tokens))
    # the plan of `lion plan`, for the paper's seed count (the token means come from the rows measured)
    planned = make_plan(config, seeds, assumptions, n_seeds=args.seeds)
    batch = ApiRole(base_url="https://api.openai.com/v1", model="gpt-3.5-turbo", mode="batch", price=price).batch_price()
    settings = BatchSettings()
    measured = measure(seeds, config, assumptions)
    roles = {}
    for name, totals in planned.by("role").items():
        rows = [r for r in planned.rows if r.role == name]
        reqs = role_requests(seeds[:settings.max_requests_per_batch], config, assumptions)[name]
        # a full batch as plan_batches fills it (within the per-file request and byte limits), and the requests
        # the enqueued-token cap lets wait together (one batch at a time when a batch alone is over the cap)
        sample = [(str(i), q) for i, q in enumerate(reqs)]
        per_batch = len(plan_batches(sample, "gpt-3.5-turbo", settings, token_room=10**15)[0])
        per_cap = len([x for b in plan_batches(sample, "gpt-3.5-turbo", settings, settings.max_enqueued_tokens)
                       for x in b])
        calls = int(totals["requests"])
        roles[name] = {
            "calls": calls, "prompt_tokens_mean": round(measured[name].prompt, 1),
            "completion_tokens_mean": round(measured[name].completion, 1),
            "cost_interactive_usd": round(sum(r.cost_usd for r in rows), 2),
            "cost_batch_usd": round(sum(r.batch_cost_usd for r in rows), 2),
            "batches_at_least": math.ceil(calls / per_batch),
            "batches_at_token_cap": math.ceil(calls / per_cap),
        }
    calls_total = planned.requests
    cache = [args.seeds + k * args.new_per_iteration for k in range(args.iterations)]
    final_instructions = args.seeds + args.new_per_iteration * args.iterations
    out = {
        "calls_total": calls_total,
        "cost_interactive_usd": round(sum(r["cost_interactive_usd"] for r in roles.values()), 2),
        "cost_batch_usd": round(sum(r["cost_batch_usd"] for r in roles.values()), 2),
        "saving_usd": round(sum(r["cost_interactive_usd"] - r["cost_batch_usd"] for r in roles.values()), 2),
        "interactive_hours_at_rpm": round(calls_total / args.rpm / 60, 1),
        "rpm": args.rpm, "roles": roles, "cache_pool_sizes": cache,
        "final_instructions": final_instructions, "measured_rows": len(seeds),
        "prices_per_million": {"interactive": [args.prompt_price, args.completion_price],
                               "batch": [batch.prompt_per_million, batch.completion_per_million]},
        "max_enqueued_tokens": settings.max_enqueued_tokens,
        "assumptions": {"acceptance": args.acceptance, "reask_rate": args.reask_rate,
                        "referee_reply_tokens": args.referee_reply_tokens},
        "token_counting": planned.token_counting,
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(f"The paper's run: {args.seeds} seeds, +{args.new_per_iteration} per iteration x {args.iterations}, "
          f"Cache Pool {' -> '.join(map(str, cache))}, {final_instructions} instructions")
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
