"""Student inference: batched generation versus one prompt at a time (the official code's way).

Same embedded student (SmolLM2-135M-Instruct), same prompts, greedy, same max_new_tokens, same run.

    python bench/student_inference.py --json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from transformers import AutoTokenizer

from lion_core.config import StudentGeneration
from lion_core.prompts import student_prompt
from lion_core.student.infer import generate_hf
from lion_core.student.models import resolve_model

SEEDS = Path(__file__).resolve().parents[1] / "data" / "demo_seeds.jsonl"


def timed(model: str, tokenizer, prompts: list[str], batch_size: int, max_new: int) -> tuple[float, int]:
    gen = StudentGeneration(do_sample=False, max_new_tokens=max_new, batch_size=batch_size)
    t0 = time.perf_counter()
    tokens = sum(n for *_, n in generate_hf(model, tokenizer, prompts, list(range(len(prompts))), gen, seed=0))
    return time.perf_counter() - t0, tokens


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--json", action="store_true", help="end with one JSON line (always printed)")
    args = ap.parse_args()

    model = resolve_model("embedded:smollm2-135m-instruct")
    tokenizer = AutoTokenizer.from_pretrained(model)
    rows = [json.loads(x) for x in SEEDS.read_text().splitlines()][: args.prompts]
    prompts = [student_prompt(r["instruction"], r["input"], "alpaca") for r in rows]
    timed(model, tokenizer, prompts[:1], 1, 4)  # load and warm up once, outside both timings
    seq_s, seq_tokens = timed(model, tokenizer, prompts, 1, args.max_new_tokens)
    bat_s, bat_tokens = timed(model, tokenizer, prompts, args.batch_size, args.max_new_tokens)
    result = {
        "prompts": len(prompts), "max_new_tokens": args.max_new_tokens, "batch_size": args.batch_size,
        "sequential_seconds": round(seq_s, 2), "sequential_tokens": seq_tokens,
        "sequential_tokens_per_s": round(seq_tokens / seq_s, 2),
        "batched_seconds": round(bat_s, 2), "batched_tokens": bat_tokens,
        "batched_tokens_per_s": round(bat_tokens / bat_s, 2),
        "speedup": round((bat_tokens / bat_s) / (seq_tokens / seq_s), 2),
    }
    print(f"one prompt at a time: {seq_tokens} tokens in {seq_s:.1f} s = {result['sequential_tokens_per_s']} tokens/s")
    print(f"batches of {args.batch_size}: {bat_tokens} tokens in {bat_s:.1f} s = {result['batched_tokens_per_s']} tokens/s "
          f"({result['speedup']}x)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
