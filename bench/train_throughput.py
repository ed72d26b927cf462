"""The student's fine-tune on CPU: training tokens/s and padding, with and without length grouping.

The embedded student (SmolLM2-135M-Instruct) trains for a few optimizer steps on Alpaca instructions
with their reference outputs as answers (lengths vary like real answers), once with length-grouped
batches (our default) and once with plain random batches (the baseline), through the same launcher,
in the same run. Padding fraction = padded positions / all positions in the batches.

    python bench/train_throughput.py --json
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
from pathlib import Path

import pandas as pd
import pyarrow as pa

from lion_core.config import parse_config
from lion_core.stages import ANSWERS_SCHEMA, ANSWERS_SCHEMA_VERSION
from lion_core.store import RunStore
from lion_core.student.launch import TrainOptions, train_student
from lion_core.student.models import checkpoint_info, resolve_model

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "stanford_alpaca" / \
    "alpaca_data_52k_en_via_open-chinese.parquet"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--rows", type=int, default=96)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--per-device-batch", type=int, default=4)
    ap.add_argument("--accumulation", type=int, default=2)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--json", action="store_true", help="end with one JSON line (always printed)")
    args = ap.parse_args()

    df = pd.read_parquet(args.data)
    rng = random.Random(0)
    picks = rng.sample(range(len(df)), args.rows)
    rows = [{"id": f"{i:016x}", "instruction": df.instruction[i], "input": df.input[i], "answer": df.output[i],
             "finish_reason": "stop", "status": "ok", "error": None} for i in picks]
    model = resolve_model("embedded:smollm2-135m-instruct")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        cfg = parse_config({
            "storage": {"runs_root": tmp},
            "training": {"launcher": "python", "deepspeed_config": None, "bf16": False, "gradient_checkpointing": False,
                         "per_device_batch_size": args.per_device_batch,
                         "effective_batch_size": args.per_device_batch * args.accumulation,
                         "max_length": args.max_length, "learning_rate": 2e-5},
        })
        store = RunStore(tmp, "bench", cfg)
        ref = store.write_table(0, "teacher_answers", pa.Table.from_pylist(rows, schema=ANSWERS_SCHEMA),
                                schema_version=ANSWERS_SCHEMA_VERSION)
        for sampling in ("group_by_length", "random"):
            options = TrainOptions(max_steps=args.steps, save_steps=10**6, sampling=sampling, timeout_s=3600)
            ckpt = train_student(cfg, ref, model, Path(tmp) / sampling, options=options)
            info = checkpoint_info(ckpt)
            results[sampling] = (info["real_tokens"] / info["train_runtime_s"], info["padding_fraction"])
    (tps, pad), (base_tps, base_pad) = results["group_by_length"], results["random"]
    result = {
        "model": "SmolLM2-135M-Instruct", "steps": args.steps, "per_device_batch": args.per_device_batch,
        "accumulation": args.accumulation, "max_length": args.max_length,
        "tokens_per_s": round(tps, 1), "padding_fraction": round(pad, 4),
        "baseline_tokens_per_s": round(base_tps, 1), "baseline_padding_fraction": round(base_pad, 4),
        "speedup": round(tps / base_tps, 2),
    }
    print(f"length-grouped batches: {tps:.1f} real tokens/s, {pad:.1%} padding")
    print(f"random batches (baseline): {base_tps:.1f} real tokens/s, {base_pad:.1%} padding")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
