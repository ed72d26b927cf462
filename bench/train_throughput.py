"""The student's fine-tune on CPU: full fine-tuning against LoRA, and length-grouped against random batches.

The embedded student (SmolLM2-135M-Instruct) trains for a few optimizer steps on Alpaca instructions with
their reference outputs as answers (lengths vary like real answers), through the same launcher and the
embedded demo's training settings (bf16 on the CPU, DeepSpeed ZeRO-2 in one process) with gradient
checkpointing (off with --no-gradient-checkpointing), in the same run.

`--compare method` (default): every weight trained (the paper's full fine-tune: the baseline), full with
the demo's frozen embedding, and LoRA (rank 16 on every linear layer). Figures per fine-tune: seconds per
optimizer step, peak resident memory of the training process (and what it held before loading the model),
trainable parameters. Goal: LoRA's peak at most half of the full fine-tune's.

`--compare sampling`: length-grouped batches (our default) against plain random batches (the baseline):
real training tokens per second and padding fraction (padded positions / all positions).

    python bench/train_throughput.py --json
    python bench/train_throughput.py --compare sampling --json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
from pathlib import Path

import pandas as pd
import pyarrow as pa

from lion_core.config import parse_config
from lion_core.imitation.answers import ANSWERS_SCHEMA, ANSWERS_SCHEMA_VERSION
from lion_core.store import RunStore
from lion_core.student.launch import TrainOptions, train_student
from lion_core.student.models import checkpoint_info, resolve_model

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = (Path(os.environ.get("LION_SHARED_DATA", REPO.parent / "shared" / "data"))
                / "stanford_alpaca" / "alpaca_data_52k_en_via_open-chinese.parquet")
METHODS = {
    "full": {"method": "full", "freeze_embeddings": False},
    "full_frozen_embeddings": {"method": "full", "freeze_embeddings": True},
    "lora": {"method": "lora", "freeze_embeddings": False, "lora": {"rank": 16, "alpha": 32}},
}
MB = 1024 * 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--compare", choices=["method", "sampling"], default="method")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--rows", type=int, default=96)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--per-device-batch", type=int, default=4)
    ap.add_argument("--accumulation", type=int, default=2)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction, default=True,
                    help="recompute activations in the backward pass, in every fine-tune compared (default: on)")
    ap.add_argument("--json", action="store_true", help="end with one JSON line (always printed)")
    args = ap.parse_args()

    df = pd.read_parquet(args.data)
    rng = random.Random(0)
    picks = rng.sample(range(len(df)), args.rows)
    rows = [{"id": f"{i:016x}", "instruction": df.instruction[i], "input": df.input[i], "answer": df.output[i],
             "finish_reason": "stop", "status": "ok", "error": None} for i in picks]
    model = resolve_model("embedded:smollm2-135m-instruct")
    setup = {"model": "SmolLM2-135M-Instruct", "steps": args.steps, "per_device_batch": args.per_device_batch,
             "accumulation": args.accumulation, "max_length": args.max_length,
             "gradient_checkpointing": args.gradient_checkpointing}
    with tempfile.TemporaryDirectory() as tmp:
        def config(**training):
            return parse_config({
                "storage": {"runs_root": tmp},
                "training": {"launcher": "python", "deepspeed_config": str(REPO / "deployments/deepspeed/zero2.json"),
                             "bf16": True, "gradient_checkpointing": args.gradient_checkpointing,
                             "per_device_batch_size": args.per_device_batch,
                             "effective_batch_size": args.per_device_batch * args.accumulation,
                             "max_length": args.max_length, "learning_rate": 2e-4, **training},
            })

        store = RunStore(tmp, "bench", config())
        ref = store.write_table(0, "teacher_answers", pa.Table.from_pylist(rows, schema=ANSWERS_SCHEMA),
                                schema_version=ANSWERS_SCHEMA_VERSION)

        def fine_tune(name: str, sampling: str = "group_by_length", **training) -> dict:
            options = TrainOptions(max_steps=args.steps, save_steps=10**6, sampling=sampling, timeout_s=3600)
            return checkpoint_info(train_student(config(**training), ref, model, Path(tmp) / name, options=options))

        result = compare_methods(fine_tune) if args.compare == "method" else compare_sampling(fine_tune)
    print(json.dumps({**setup, **result}))


def compare_methods(fine_tune) -> dict:
    figures = {}
    for name, training in METHODS.items():
        info = fine_tune(name, **training)
        figures[name] = {
            "s_per_step": round(info["train_runtime_s"] / info["global_step"], 2),
            "peak_rss_mb": round(info["peak_rss_bytes"] / MB),
            "rss_before_model_mb": round(info["rss_at_start_bytes"] / MB) if info.get("rss_at_start_bytes") else None,
            "trainable_parameters": info["trainable_parameters"], "parameters": info["parameters"],
            "train_loss": round(info["train_loss"], 4),
        }
    full, lora = figures["full"], figures["lora"]
    ratio = lora["peak_rss_mb"] / full["peak_rss_mb"]
    print(f"{'fine-tune':<24} {'s/step':>7} {'peak RSS':>9} {'(before model)':>15} {'trainable':>12} {'of':>12}")
    for name, f in figures.items():
        print(f"{name:<24} {f['s_per_step']:>7.2f} {f['peak_rss_mb']:>6} MB {f['rss_before_model_mb'] or '-':>12} MB "
              f"{f['trainable_parameters']:>12,} {f['parameters']:>12,}")
    print(f"LoRA peak / full peak (baseline: full, every weight trained): {ratio:.2f} (goal <= 0.50: "
          f"{'met' if ratio <= 0.5 else 'not met'})")
    return {"figures": figures, "lora_peak_over_full": round(ratio, 3), "goal_met": ratio <= 0.5,
            "lora_speedup": round(full["s_per_step"] / lora["s_per_step"], 2)}


def compare_sampling(fine_tune) -> dict:
    results = {}
    for sampling in ("group_by_length", "random"):
        info = fine_tune(sampling, sampling=sampling)
        results[sampling] = (info["real_tokens"] / info["train_runtime_s"], info["padding_fraction"])
    (tps, pad), (base_tps, base_pad) = results["group_by_length"], results["random"]
    print(f"length-grouped batches: {tps:.1f} real tokens/s, {pad:.1%} padding")
    print(f"random batches (baseline): {base_tps:.1f} real tokens/s, {base_pad:.1%} padding")
    return {"tokens_per_s": round(tps, 1), "padding_fraction": round(pad, 4), "baseline_tokens_per_s": round(base_tps, 1),
            "baseline_padding_fraction": round(base_pad, 4), "speedup": round(tps / base_tps, 2)}


if __name__ == "__main__":
    main()
