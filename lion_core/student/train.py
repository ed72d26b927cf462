"""The student's fine-tune: the launched entry point (`python -m lion_core.student.train`).

Runs under `deepspeed`, `torchrun`, `accelerate launch` or as one plain process; HF Trainer does the
training, with a DeepSpeed ZeRO config when the run config names one. Reads the teacher's answers
from a hash-checked Parquet artifact, trains on the answer tokens only, resumes from its last Trainer
checkpoint when restarted, and leaves `<output>/final` in `save_pretrained` form with the tokenizer
and `lion_checkpoint.json` (prompt format, training data hash, run config, training arguments). A
`.complete` file written last marks a finished checkpoint.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported where used: launch.py imports this module for its constants, without torch
    from lion_core.config import RunConfig
    from lion_core.store import PoolRef
    from lion_core.student.data import Examples, PadCollator

FINAL = "final"
COMPLETE = ".complete"


TRAINER_STATE = "trainer_state.json"
STEP_LINE = "lion-step"
"""Printed with `done/total` optimizer steps after each step (see `StepLines`)."""


def parse_step_line(line: str) -> tuple[int, int] | None:
    """(done, total) from a `lion-step N/M` line of a fine-tune's log; None for any other line."""
    head, _, rest = line.strip().partition(" ")
    done, _, total = rest.partition("/")
    if head != STEP_LINE or not (done.isdigit() and total.isdigit()):
        return None
    return int(done), int(total)


def last_complete_checkpoint(trainer_dir: Path) -> str | None:
    """The newest Trainer checkpoint that was written to its end, or None. The Trainer writes its state
    file after the weights and the optimizer, so a save cut short (a full disk, a kill) leaves a folder
    without it; resuming from that one would fail every retry (measured: a disk-full save of
    checkpoint-4, then `FileNotFoundError: .../checkpoint-4/trainer_state.json` on the retry)."""
    done = [p for p in trainer_dir.glob("checkpoint-*")
            if p.name.rsplit("-", 1)[-1].isdigit() and (p / TRAINER_STATE).is_file()]
    return str(max(done, key=lambda p: int(p.name.rsplit("-", 1)[-1]))) if done else None


def peak_rss_bytes() -> int:
    """The most resident memory this process has held (on the CPU, the fine-tune's peak memory)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux


def current_rss_bytes() -> int | None:
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):  # not Linux
        return None


def quantized_loading(compute_dtype, place: bool) -> dict:
    """from_pretrained arguments of a QLoRA base: 4-bit NF4 weights with double quantisation (the QLoRA
    paper's), computing in `compute_dtype`, stored in it too so ZeRO-3 can partition them. `place`
    (no DeepSpeed): each rank loads its own copy onto its own GPU."""
    import torch
    from transformers import BitsAndBytesConfig

    if not torch.cuda.is_available():
        sys.exit("training.method: qlora needs a CUDA GPU (bitsandbytes 4-bit weights), and this machine has none")
    return {"quantization_config": BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype, bnb_4bit_quant_storage=compute_dtype),
        **({"device_map": {"": int(os.environ.get("LOCAL_RANK", "0"))}} if place else {})}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--config-json", required=True, help="the run config, as JSON")
    ap.add_argument("--answers-uri", required=True)
    ap.add_argument("--answers-sha256", required=True)
    ap.add_argument("--answers-rows", type=int, required=True)
    ap.add_argument("--base-model", required=True, help="folder or model id to start from")
    ap.add_argument("--output-dir", required=True)
    ap.add_argument("--run-id", default="")
    ap.add_argument("--iteration", type=int, default=0)
    ap.add_argument("--max-steps", type=int, default=-1, help="stop after this many optimizer steps (tests, benchmarks)")
    ap.add_argument("--save-steps", type=int, default=200)
    ap.add_argument("--sampling", choices=["group_by_length", "random"], default="group_by_length",
                    help="batch similar lengths together to cut padding (default), or plain random batches")
    ap.add_argument("--local_rank", "--local-rank", type=int, default=None, help="set by the deepspeed launcher")
    return ap.parse_args(argv)


@dataclass(frozen=True)
class Setup:
    """What every step reads: the arguments, the run config, and this process's place in the launch."""

    args: argparse.Namespace
    cfg: RunConfig
    world: int
    rank: int
    cuda: bool
    bf16: bool
    rss_at_start: int | None

    @property
    def out(self) -> Path:
        return Path(self.args.output_dir)


@dataclass(frozen=True)
class Student:
    model: Any
    base_model: str
    """What the weights were loaded from: the adapter's base when continuing a LoRA adapter."""
    trainable: int
    total: int


@dataclass(frozen=True)
class TrainingData:
    ref: PoolRef
    examples: Examples
    collator: PadCollator


@dataclass(frozen=True)
class Trained:
    trainer: Any
    result: Any
    resumed: bool


def load_setup(args: argparse.Namespace) -> Setup:
    """The run config, checked against the launch's world size before anything heavy is loaded."""
    import torch

    from lion_core.config import RunConfig

    cfg = RunConfig.model_validate_json(Path(args.config_json).read_text())
    rss_at_start = baseline_rss_bytes()
    t = cfg.training
    world = int(os.environ.get("WORLD_SIZE", "1"))
    per_step = t.per_device_batch_size * world
    if t.effective_batch_size % per_step:
        sys.exit(f"training.effective_batch_size {t.effective_batch_size} is not a multiple of "
                 f"per_device_batch_size x world size = {t.per_device_batch_size} x {world}")
    cuda = torch.cuda.is_available()
    return Setup(args=args, cfg=cfg, world=world, rank=int(os.environ.get("RANK", "0")), cuda=cuda,
                 bf16=bool(t.bf16 and (torch.cuda.is_bf16_supported() if cuda else True)), rss_at_start=rss_at_start)


def baseline_rss_bytes() -> int | None:
    """Resident memory with the libraries the fine-tune uses loaded and no model yet: what the record's
    peak is read against, so the difference is the model's and the optimizer's."""
    # The same libraries as before the fine-tune's steps were split (the Trainer and the auto classes
    # included), so the figure compares with earlier records.
    import torch  # noqa: F401
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments  # noqa: F401

    import lion_core.config  # noqa: F401
    import lion_core.imitation.answers  # noqa: F401
    import lion_core.prompts  # noqa: F401
    import lion_core.store  # noqa: F401
    import lion_core.student.data  # noqa: F401
    import lion_core.student.lora  # noqa: F401
    import lion_core.student.models  # noqa: F401

    return current_rss_bytes()


def training_arguments(setup: Setup) -> Any:
    """The Trainer's arguments, and the process group. They come before the model: with ZeRO-3 they make
    from_pretrained load it partitioned across ranks (every rank must call it)."""
    from transformers import TrainingArguments

    args, t = setup.args, setup.cfg.training
    targs = TrainingArguments(
        output_dir=str(setup.out / "trainer"),
        per_device_train_batch_size=t.per_device_batch_size,
        gradient_accumulation_steps=t.effective_batch_size // (t.per_device_batch_size * setup.world),
        learning_rate=t.learning_rate,
        num_train_epochs=t.num_train_epochs,
        max_steps=args.max_steps if args.max_steps > 0 else (t.max_steps or -1),
        lr_scheduler_type=t.lr_scheduler_type,
        warmup_steps=t.warmup_ratio,
        weight_decay=t.weight_decay,
        bf16=setup.bf16,
        gradient_checkpointing=t.gradient_checkpointing,
        deepspeed=t.deepspeed_config,
        use_cpu=not setup.cuda,
        train_sampling_strategy=args.sampling,
        save_strategy="steps",
        save_steps=args.save_steps,
        save_total_limit=2,
        logging_steps=1,
        report_to=[],
        optim=t.optim,
        seed=setup.cfg.loop.random_seed,
        remove_unused_columns=False,
        disable_tqdm=True,
    )
    # Set up the process group now: ZeRO-3's partitioned loading checks batch sizes against DeepSpeed's
    # view of the world size, which is 1 until its communication layer is initialised.
    _ = targs.device
    if t.deepspeed_config:
        import deepspeed

        deepspeed.init_distributed()
    return targs


def load_tokenizer(setup: Setup) -> Any:
    from transformers import AutoTokenizer

    from lion_core.prompts import adds_bos, alpaca_chat_template

    tokenizer = AutoTokenizer.from_pretrained(setup.args.base_model)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if setup.cfg.student.prompt_format == "alpaca":
        # The checkpoint serves with the prompt it is trained on (not the base model's chat template).
        tokenizer.chat_template = alpaca_chat_template(bos=adds_bos(tokenizer))
    return tokenizer


def load_model(setup: Setup) -> Student:
    """The model to train: the full weights, or the base with a LoRA adapter (new or continued)."""
    import torch
    from transformers import AutoModelForCausalLM

    from lion_core.student.lora import adapter_base, is_adapter, parameter_counts, with_adapter

    start, t = setup.args.base_model, setup.cfg.training
    # bf16 weights only under DeepSpeed, which keeps fp32 master weights; HF Trainer alone trains the
    # weights it is given, and bf16 weights would round small AdamW updates away: there it loads fp32 and
    # computes in bf16 under autocast (measured on the demo: a first checkpoint below its base student).
    # A LoRA base is frozen, so it may stay bf16 either way (peft keeps the adapters in fp32).
    weights = torch.bfloat16 if setup.bf16 and (t.deepspeed_config or t.method != "full") else torch.float32
    # A LoRA fine-tune that continues an earlier adapter starts from that adapter's base model.
    base_model = adapter_base(start) if is_adapter(start) else start
    if is_adapter(start) and t.method == "full":
        sys.exit(f"{start} is a LoRA adapter, and training.method is full: train it on with method lora, "
                 "or export it merged (lion export-model --merge) and start a new run from that")
    load: dict = {"dtype": weights}
    if t.method == "qlora":
        load.update(quantized_loading(weights, place=not t.deepspeed_config))
    model = AutoModelForCausalLM.from_pretrained(base_model, **load)
    if t.freeze_embeddings:
        model.get_input_embeddings().weight.requires_grad_(False)  # a tied head is the same tensor
    if t.method != "full":
        if t.method == "qlora":
            from peft import prepare_model_for_kbit_training

            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=t.gradient_checkpointing)
        elif t.gradient_checkpointing:
            model.enable_input_require_grads()  # the frozen embedding's output must carry gradients back
        model = with_adapter(model, start, t.lora)
        if not t.deepspeed_config:
            # peft keeps the adapters in fp32, but the full copies of `modules_to_save` take the base's bf16;
            # HF Trainer alone would round their small AdamW updates away (DeepSpeed keeps fp32 masters)
            for p in model.parameters():
                if p.requires_grad and p.dtype != torch.float32:
                    p.data = p.data.float()
    trainable, total = parameter_counts(model)
    print(json.dumps({"method": t.method, "trainable_parameters": trainable, "parameters": total}), flush=True)
    return Student(model=model, base_model=base_model, trainable=trainable, total=total)


def training_data(setup: Setup, tokenizer: Any) -> TrainingData:
    """The teacher's answered rows from the hash-checked artifact, as answer-only-loss examples."""
    from lion_core.imitation.answers import ANSWERS_SCHEMA_VERSION
    from lion_core.store import PoolRef, read_table
    from lion_core.student.data import PadCollator, build_examples

    args = setup.args
    ref = PoolRef(uri=args.answers_uri, sha256=args.answers_sha256, rows=args.answers_rows,
                  schema_version=ANSWERS_SCHEMA_VERSION)
    rows = [r for r in read_table(ref).to_pylist() if r["status"] == "ok" and r["answer"]]
    examples = build_examples(rows, tokenizer, setup.cfg.student.prompt_format, setup.cfg.training.max_length)
    if not examples.items:
        sys.exit(f"{args.answers_uri}: no usable training examples ({len(rows)} answered rows)")
    return TrainingData(ref=ref, examples=examples, collator=PadCollator(tokenizer.pad_token_id))


def train(setup: Setup, targs: Any, student: Student, data: TrainingData) -> Trained:
    """Train, from the last complete Trainer checkpoint when this is a restart."""
    from transformers import Trainer, TrainerCallback

    from lion_core.student.data import ListDataset

    class StepLines(TrainerCallback):
        """`lion-step N/M` after each optimizer step on rank 0: the launcher's progress bar and `lion status`
        read the fine-tune's progress from these lines of its log."""

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.is_world_process_zero:
                print(f"{STEP_LINE} {state.global_step}/{state.max_steps}", flush=True)

    trainer = Trainer(model=student.model, args=targs, train_dataset=ListDataset(data.examples.items),
                      data_collator=data.collator, callbacks=[StepLines()])
    last = last_complete_checkpoint(setup.out / "trainer")
    return Trained(trainer=trainer, result=trainer.train(resume_from_checkpoint=last), resumed=last is not None)


def save_checkpoint(setup: Setup, tokenizer: Any, targs: Any, student: Student, data: TrainingData,
                    trained: Trained) -> Path:
    """`<output>/final`: the weights (every rank takes part), then on rank 0 the tokenizer, the record and,
    last, the `.complete` marker."""
    final = setup.out / FINAL
    trained.trainer.save_model(str(final))  # under ZeRO-3 this gathers the 16-bit weights first
    if setup.rank == 0:
        from lion_core.student.models import CHECKPOINT_INFO

        tokenizer.save_pretrained(str(final))
        info = checkpoint_record(setup, targs, student, data, trained)
        (final / CHECKPOINT_INFO).write_text(json.dumps(info, indent=2, default=str))
        (final / COMPLETE).write_text("ok\n")
    result = trained.result
    print(json.dumps({"checkpoint": str(final), "train_loss": result.training_loss, "steps": result.global_step}),
          flush=True)
    return final


def checkpoint_record(setup: Setup, targs: Any, student: Student, data: TrainingData, trained: Trained) -> dict:
    """`lion_checkpoint.json`: what the checkpoint was trained from and how, and what it cost."""
    import torch

    from lion_core.version import code_version

    args, cfg, result, collator = setup.args, setup.cfg, trained.result, data.collator
    method = cfg.training.method
    return {
        "run_id": args.run_id, "iteration": args.iteration, "base_model": args.base_model,
        "method": method, "adapter_base": student.base_model if method != "full" else None,
        "trainable_parameters": student.trainable, "parameters": student.total, "peak_rss_bytes": peak_rss_bytes(),
        "rss_at_start_bytes": setup.rss_at_start,
        "prompt_format": cfg.student.prompt_format,
        "train_data": data.ref.model_dump(), "examples": len(data.examples.items),
        "skipped_prompt_too_long": data.examples.skipped_prompt_too_long, "truncated": data.examples.truncated,
        "world_size": setup.world, "resumed": trained.resumed, "train_loss": result.training_loss,
        "global_step": result.global_step, "padding_fraction": collator.padding_fraction,
        "train_runtime_s": result.metrics.get("train_runtime"), "real_tokens": collator.real_tokens,
        "peak_gpu_memory_bytes": torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None,
        "sampling": args.sampling,
        "log_history": trained.trainer.state.log_history,
        "training_args": json.loads(targs.to_json_string()),
        "config_hash": cfg.config_hash(), "config": cfg.to_json_dict(), "code_version": code_version(),
    }


def main(argv: list[str] | None = None) -> None:
    setup = load_setup(parse_args(argv))
    targs = training_arguments(setup)  # before the model: ZeRO-3 loads it partitioned
    tokenizer = load_tokenizer(setup)
    student = load_model(setup)
    data = training_data(setup, tokenizer)
    trained = train(setup, targs, student, data)
    save_checkpoint(setup, tokenizer, targs, student, data, trained)


if __name__ == "__main__":
    main()
