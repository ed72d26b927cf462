"""ROUGE-L novelty filter at the paper's scale, against rouge-score over every pair.

6,000 candidates against a 64,000-instruction pool (the Alpaca 52K set plus 12K variants). Our filter
runs on all of it. The reference (rouge-score's RougeScorer over every pair, as the official code does)
runs on a sample of candidates in the same process and is extrapolated; on that sample both must
reach the same decisions and the same maximum F1.

    python bench/rouge_filter.py --json [--data ALPACA_52K.parquet]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path

import pandas as pd
from rouge_score import rouge_scorer

from lion_core.generation.novelty import filter_novel

DEFAULT_DATA = (Path(os.environ.get("LION_SHARED_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))
                / "stanford_alpaca" / "alpaca_data_52k_en_via_open-chinese.parquet")


def variant(rng: random.Random, s: str) -> str:
    w = s.split()
    op = rng.randrange(4)
    if op == 0 and len(w) > 2:
        del w[rng.randrange(len(w))]
    elif op == 1:
        w.insert(rng.randrange(len(w) + 1), rng.choice(["please", "briefly", "now", "carefully", "in detail"]))
    elif op == 2 and len(w) > 1:
        w[rng.randrange(len(w))] = rng.choice(["river", "robot", "garden", "market"])
    else:
        rng.shuffle(w)
    return " ".join(w)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--pool", type=int, default=64000)
    ap.add_argument("--candidates", type=int, default=6000)
    ap.add_argument("--sample", type=int, default=12, help="candidates scored the reference way")
    ap.add_argument("--threshold", type=float, default=0.7)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="end with one JSON line (always printed)")
    args = ap.parse_args()

    rng = random.Random(args.seed)
    base = pd.read_parquet(args.data)["instruction"].tolist()
    pool = base[: args.pool] + [variant(rng, rng.choice(base)) for _ in range(max(0, args.pool - len(base)))]
    # Candidates like a generator's output: half rewrites of pool items (many near-duplicates), half new
    # combinations of two instructions.
    cands = [variant(rng, rng.choice(base)) if rng.random() < 0.5 else f"{rng.choice(base)} {rng.choice(base)}"
             for _ in range(args.candidates)]

    t0 = time.perf_counter()
    verdicts = filter_novel(pool, cands, args.threshold)
    full_s = time.perf_counter() - t0

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    sample = sorted(rng.sample(range(len(cands)), args.sample))
    identical = True
    t0 = time.perf_counter()
    pairs = 0
    for j in sample:
        against = pool + [c for c, v in zip(cands[:j], verdicts[:j]) if v.accepted]
        best = max((scorer.score(p, cands[j])["rougeL"].fmeasure for p in against), default=0.0)
        pairs += len(against)
        identical &= (best <= args.threshold) == verdicts[j].accepted and best == verdicts[j].max_rouge_l
    ref_s = time.perf_counter() - t0
    ref_extrapolated = ref_s / len(sample) * len(cands)

    result = {
        "candidates": len(cands), "pool": len(pool), "threshold": args.threshold,
        "accepted": sum(v.accepted for v in verdicts),
        "full_seconds": round(full_s, 2),
        "reference_sample": len(sample), "reference_sample_seconds": round(ref_s, 2),
        "reference_pairs_per_second": round(pairs / ref_s),
        "reference_seconds_extrapolated": round(ref_extrapolated, 1),
        "speedup": round(ref_extrapolated / full_s, 1),
        "sample_decisions_identical": identical,
    }
    print(f"ours: {len(cands)} candidates x {len(pool)} pool in {full_s:.1f} s ({result['accepted']} accepted)")
    print(f"rouge-score, every pair: {ref_s:.1f} s for {len(sample)} candidates ({result['reference_pairs_per_second']} pairs/s)"
          f" -> {ref_extrapolated / 3600:.1f} h extrapolated; speedup {result['speedup']}x; "
          f"sample decisions identical: {identical}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
