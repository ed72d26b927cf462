"""The student: the open model that is distilled, how it answers, and how it is fine-tuned.

Where and how the fine-tune is launched (its timeout, the nodes, the rendezvous, the DeepSpeed file's
location) are operations (`OPERATION`): a resume may move a run to other machines. What is trained and
with which hyperparameters is the run's identity.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from lion_core.config.base import LOCAL_PATH, OPERATION, NonNegFloat, PositiveInt, Section

# The checkout's root: the default DeepSpeed config is the project's own file, wherever lion is started.
_PROJECT = Path(__file__).resolve().parents[2]


class StudentGeneration(Section):
    do_sample: bool = True
    """Sample the student's answers (true, the paper's) or decode greedily (false)."""
    temperature: Annotated[float, Field(ge=0, le=2)] = 0.7
    """Sampling temperature, used when do_sample. Paper: 0.7."""
    top_p: Annotated[float, Field(gt=0, le=1)] = 1.0
    """Nucleus sampling threshold, used when do_sample; 1 keeps all tokens."""
    max_new_tokens: PositiveInt = 1024
    """Most tokens in one student answer. Paper: 1024."""
    batch_size: PositiveInt = 16
    """Prompts answered together per generate() call (transformers; vLLM batches on its own)."""


class StudentConfig(Section):
    model: str = "embedded:smollm2-135m-instruct"
    """A local checkpoint folder, a Hugging Face model id, or `embedded:<name>` for a model shipped in a package."""
    keep_layers: PositiveInt | None = None
    """Derive the student from `model` by keeping this many of its decoder layers, evenly spaced (depth
    pruning, as Minitron and Sheared-LLaMA do before distilling): a weaker student with room to learn.
    Made once and cached; the pruned model is the run's base model."""
    prompt_format: Literal["alpaca", "chat_template"] = "alpaca"
    """`alpaca`: the paper's `### Instruction / ### Input / ### Response` prompt, saved as each checkpoint's
    chat template; `chat_template`: the tokenizer's own chat template."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """Weight dtype when the student answers (`auto`: as saved); training precision is `training.bf16`."""
    generation: StudentGeneration = StudentGeneration()
    """How the student answers the Cache Pool (discrimination) and evaluation questions."""


class LoraSettings(Section):
    """Low-rank adapters (LoRA, Hu et al. 2021, through `peft`) for `training.method: lora | qlora`: the base
    weights stay frozen and each targeted linear layer learns a rank-`rank` update, so gradients and
    optimizer state exist only for the adapters."""

    rank: PositiveInt = 16
    """Rank r of each adapter's update matrices."""
    alpha: Annotated[float, Field(gt=0)] = 32.0
    """LoRA alpha: the update is scaled by alpha / rank."""
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.05
    """Dropout on the adapters' input during training."""
    target_modules: list[str] | Literal["all-linear"] = "all-linear"
    """Module names (or name suffixes) that get adapters, e.g. [q_proj, v_proj]; `all-linear`: every linear
    layer of the decoder except the output head (QLoRA's choice)."""
    modules_to_save: list[str] = []
    """Modules trained in full and saved beside the adapters, e.g. [lm_head] or [embed_tokens] when the
    prompt format adds tokens the base model never saw."""

    @field_validator("target_modules")
    @classmethod
    def _some_targets(cls, v: list[str] | str) -> list[str] | str:
        if isinstance(v, list) and (not v or any(not m.strip() for m in v)):
            raise ValueError("name at least one module, with no empty names, or give `all-linear`")
        return v


class TrainingConfig(Section):
    learning_rate: Annotated[float, Field(gt=0)] = 2e-5
    """Peak learning rate of the student's fine-tune. Paper: 2e-5."""
    num_train_epochs: Annotated[float, Field(gt=0)] = 3
    """Passes over each iteration's training answers (a fraction is allowed). Paper: 3."""
    max_steps: PositiveInt | None = None
    """Stop each fine-tune after this many optimizer steps, whatever the epochs say (the schedule is fitted
    to them); None: the epochs of `num_train_epochs`, the paper's. For trials and simulations that must go
    through training without paying for it in full."""
    max_length: PositiveInt = 1024
    """Most tokens (prompt and answer) of a training example; longer ones are cut, and one whose prompt
    alone fills it is skipped. Paper: 1024."""
    lr_scheduler_type: Literal["cosine", "linear", "constant", "constant_with_warmup"] = "cosine"
    """Learning-rate schedule after the warm-up (Hugging Face scheduler names). Paper: cosine."""
    warmup_ratio: Annotated[float, Field(ge=0, lt=1)] = 0.03
    """Fraction of the training steps over which the learning rate rises from 0. Paper: 0.03."""
    weight_decay: NonNegFloat = 0.0
    """AdamW weight decay. Paper: 0."""
    effective_batch_size: PositiveInt = 128
    """Examples per optimizer step: per-device batch x gradient accumulation x world size; accumulation is
    derived from it, so it must be a multiple of per_device_batch_size x world size. Paper: 128."""
    per_device_batch_size: PositiveInt = 4
    """Examples per forward pass in each training process (GPU)."""
    bf16: bool = True
    """bfloat16 mixed precision where the device supports it (else float32). Paper: true."""
    gradient_checkpointing: bool = True
    """Recompute activations in the backward pass: less memory for more compute."""
    # An operation: a location, absolute once loaded, so a run resumes from a moved checkout.
    deepspeed_config: Annotated[str | None, OPERATION, LOCAL_PATH] = str(_PROJECT / "deployments/deepspeed/zero3_offload.json")
    """DeepSpeed JSON config for the Trainer; None: no DeepSpeed. Default: the project's ZeRO-3 with optimizer
    and parameters offloaded to CPU (the paper's)."""
    launcher: Literal["deepspeed", "torchrun", "accelerate", "python"] = "deepspeed"
    """What starts the training processes; `python`: one plain process (world size 1)."""
    num_gpus: PositiveInt = 8
    """GPUs (training processes) per node; not used by launcher `python`. Paper: 8 x A100-80G."""
    num_nodes: PositiveInt = 1
    """Machines the fine-tune runs on. More than 1: launcher `deepspeed` with a hostfile (it starts the
    other nodes' ranks itself), or `torchrun` with `master_addr` (each other node runs the same command)."""
    hostfile: Annotated[str | None, OPERATION, LOCAL_PATH] = None
    """Hostfile naming the nodes (DeepSpeed's format: `host slots=N` per line), for deepspeed on num_nodes > 1."""
    master_addr: Annotated[str | None, OPERATION] = None
    """Multi-node: the address of the node that runs rank 0, reachable from every node (deepspeed
    `--master_addr`; torchrun's rendezvous host). None with deepspeed: the hostfile's first host."""
    master_port: Annotated[int, Field(gt=0, lt=65536), OPERATION] = 29500
    """Multi-node: the port of rank 0's rendezvous, the same on every node (a single node takes a free port)."""
    multinode_launcher: Annotated[Literal["pdsh", "openmpi", "mvapich", "slurm", "mpich", "impi"], OPERATION] = "pdsh"
    """Multi-node with deepspeed: how it starts the ranks on the other nodes (`--launcher`): pdsh over
    passwordless ssh, an MPI, or `srun` inside a Slurm allocation."""
    timeout_s: Annotated[PositiveInt, OPERATION] = 48 * 3600
    """Seconds one iteration's fine-tune may take before it is stopped and fails (default 48 h)."""
    init_from: Literal["previous", "base"] = "previous"
    """`previous`: iteration k+1 starts from iteration k's checkpoint; `base`: from the base model, trained
    on the teacher answers of every Train Pool so far."""
    optim: Literal["adamw_torch_fused", "adamw_torch"] = "adamw_torch_fused"
    """AdamW either way (when the DeepSpeed config names no optimizer of its own). Fused computes the
    update in one kernel; the per-tensor form allocates temporaries the size of a whole ZeRO partition
    (measured on the CPU demo: 2.9 GB peak for the fine-tune instead of 2.5)."""
    freeze_embeddings: bool = False
    """Keep the input embedding (and a head tied to it) fixed: a quarter of a 135M model's weights, and
    their gradients and optimizer state, out of training memory. The paper trains every weight."""
    method: Literal["full", "lora", "qlora"] = "full"
    """`full`: every weight is trained (the paper's); `lora`: low-rank adapters on a frozen base (`lora`),
    checkpoints hold the adapter; `qlora`: the same on a 4-bit base (bitsandbytes; needs a CUDA GPU).
    With `init_from: previous` iteration k+1 goes on training iteration k's adapter; with `base` it
    trains a new adapter on the base model."""
    lora: LoraSettings = LoraSettings()
    """Adapter settings of `method: lora | qlora` (not used by `full`)."""

    @property
    def world_size(self) -> int:
        return 1 if self.launcher == "python" else self.num_gpus * self.num_nodes

    @property
    def gradient_accumulation_steps(self) -> int:
        return self.effective_batch_size // (self.per_device_batch_size * self.world_size)

    @model_validator(mode="after")
    def _batch_divides(self) -> TrainingConfig:
        per_step = self.per_device_batch_size * self.world_size
        if self.effective_batch_size % per_step:
            raise ValueError(
                f"effective_batch_size {self.effective_batch_size} is not a multiple of "
                f"per_device_batch_size x world size = {self.per_device_batch_size} x {self.world_size}"
            )
        if self.num_nodes > 1 and self.launcher == "deepspeed" and not self.hostfile:
            raise ValueError("num_nodes > 1 with launcher deepspeed needs a hostfile")
        if self.num_nodes > 1 and self.launcher == "torchrun" and not self.master_addr:
            raise ValueError("num_nodes > 1 with launcher torchrun needs master_addr (the rendezvous host)")
        if self.method != "full" and self.freeze_embeddings and "embed_tokens" in self.lora.modules_to_save:
            raise ValueError("freeze_embeddings with embed_tokens in lora.modules_to_save: the embedding is "
                             "either frozen or trained, not both")
        if self.num_nodes > 1 and self.launcher in ("accelerate", "python"):
            raise ValueError(f"launcher {self.launcher} runs on one node; for num_nodes > 1 use deepspeed "
                             "(with a hostfile) or torchrun (with master_addr)")
        return self
