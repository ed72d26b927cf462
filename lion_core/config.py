"""The run config: one frozen, typed model per run, loaded from YAML.

Defaults are the settings of the paper's official code (see LION.md). Unknown keys are errors, so a
typo never silently falls back to a default. `load_config` reports every invalid field in one error.
Relative paths written in a config file are taken relative to the file's folder (`PATH_FIELDS`);
defaults that are paths are relative to the working directory, except the DeepSpeed config's, which is
the project's own file.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from lion_core.errors import ConfigError

EMBEDDED = "embedded"
"""`base_url` value that points a role at the embedded local endpoint (no key, no internet)."""
EMBEDDED_CHAT_MODEL = "smollm2-135m-instruct"
"""The embedded chat model (served by `transformers serve`)."""
STANDIN_REFEREE = "smollm2-likelihood-referee"
"""Offline referee stand-in: scores from the embedded model's likelihood of each answer (not an LLM judge)."""
STANDIN_GENERATOR = "smollm2-list-generator"
"""Offline generator stand-in: the embedded model continues a list of tasks that starts with the example."""
EMBEDDED_MODELS = (EMBEDDED_CHAT_MODEL, STANDIN_REFEREE, STANDIN_GENERATOR)

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_KEY_LIKE = re.compile(r"^(sk-|sk_|Bearer\s)", re.IGNORECASE)

PositiveInt = Annotated[int, Field(gt=0)]
NonNegFloat = Annotated[float, Field(ge=0)]


class _Frozen(BaseModel):
    # The string after a field becomes its description (`lion config explain`, lion_core.config_help).
    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)


class Sampling(_Frozen):
    temperature: Annotated[float, Field(ge=0, le=2)] = 1.0
    """Sampling temperature of each request: 0 is (near) greedy, higher is more varied. Paper: teacher
    0.7, referee 0.2, generator 1.0."""
    top_p: Annotated[float, Field(gt=0, le=1)] = 1.0
    """Nucleus sampling: draw from the most likely tokens whose probabilities add up to this; 1 keeps all."""
    max_tokens: PositiveInt | None = None
    """Most tokens in a reply. None: the API's own limit, except the generator's, derived from the seed's
    length (`max_tokens_per_seed_word`). Paper: teacher 1024, referee 512."""


class RateLimits(_Frozen):
    requests_per_minute: PositiveInt = 500
    """Requests per minute this role may send on its API key, all its shards in flight together (each
    paces itself at a share: `orchestration.shards_in_flight_per_key`)."""
    tokens_per_minute: PositiveInt = 200_000
    """Tokens per minute this role may spend on its key (each request counts its prompt estimate plus its
    max_tokens until the reply's usage is known), shared among its shards the same way."""
    max_concurrency: PositiveInt = 16
    """Most of this role's requests awaiting a reply at once, shared among its shards in flight."""


class RetryPolicy(_Frozen):
    max_attempts: PositiveInt = 6
    """Attempts per request, the first included, on a retryable error (429, 5xx, timeout, dropped
    connection, malformed reply); then the request is recorded as failed."""
    initial_backoff_s: Annotated[float, Field(gt=0)] = 1.0
    """Seconds before the second attempt; doubled for each further one, jittered, up to max_backoff_s.
    A Retry-After header from the API takes precedence."""
    max_backoff_s: Annotated[float, Field(gt=0)] = 60.0
    """Longest wait between two attempts, in seconds (>= initial_backoff_s)."""
    request_timeout_s: Annotated[float, Field(gt=0)] = 120.0
    """Seconds one request may take before it is abandoned as a timeout (retryable)."""
    unreachable_after: PositiveInt = 8
    """Connection failures in a row (refused, reset, unresolvable; not timeouts) after which a batch stops
    sending: an endpoint that is down would otherwise cost every request all its attempts and backoffs.
    The batch fails as retryable; what was answered is kept and the rest is sent by the retry."""

    @model_validator(mode="after")
    def _backoff_order(self) -> RetryPolicy:
        if self.max_backoff_s < self.initial_backoff_s:
            raise ValueError("max_backoff_s must be >= initial_backoff_s")
        return self


class Price(_Frozen):
    """US dollars per million tokens, for the cost column of the accounting table."""

    prompt_per_million: NonNegFloat = 0.0
    """US dollars per million prompt (input) tokens; 0: not costed."""
    completion_per_million: NonNegFloat = 0.0
    """US dollars per million completion (output) tokens; 0: not costed."""


class BatchSettings(_Frozen):
    """How a role's requests go through the Batch API: a JSONL file of requests, answered within the
    completion window at the batch price, outside the per-minute limits (a role's `batch`, used with
    `mode: batch`)."""

    max_requests_per_batch: PositiveInt = 50_000
    """Requests in one batch file (OpenAI's limit: 50,000)."""
    max_bytes_per_batch: PositiveInt = 200 * 1024 * 1024
    """Bytes of one batch input file (OpenAI's limit: 200 MB)."""
    max_enqueued_tokens: PositiveInt = 2_000_000
    """Tokens (prompt estimate plus max_tokens) in this role's batches not yet finished, together; further
    batches are submitted as earlier ones finish. Set it to your account's enqueued-token limit for the model."""
    completion_window: Literal["24h"] = "24h"
    """The window the provider is given to answer a batch."""
    poll_interval_s: Annotated[float, Field(gt=0)] = 60.0
    """Seconds between two looks at the batches in progress; nothing is held while waiting."""
    max_attempts: PositiveInt = 3
    """Batches a request may go through (an error line, an expired or cancelled batch, a failed upload count
    one each) before `on_exhausted` applies."""
    on_exhausted: Literal["interactive", "fail"] = "interactive"
    """A request whose batch attempts are spent: ask it interactively (at the interactive price), or record
    it as failed."""
    price: Price | None = None
    """Token prices of batch requests; None: half of `price`, the usual batch discount."""


class ApiRole(_Frozen):
    """One OpenAI-compatible endpoint playing a role (teacher, referee or generator)."""

    base_url: str = EMBEDDED
    """Base URL of an OpenAI-compatible chat API (`https://api.openai.com/v1`), or `embedded`: the local
    loopback server on the shipped SmolLM2 weights (no key, no internet)."""
    model: str = "smollm2-135m-instruct"
    """Model name sent to the API (paper: gpt-3.5-turbo). With `embedded`: smollm2-135m-instruct,
    smollm2-likelihood-referee or smollm2-list-generator."""
    api_key_env: str | None = None
    """Name of the environment variable that holds the key; the key itself never enters the config.
    None: no key (the embedded server, a keyless local one)."""
    sampling: Sampling = Sampling()
    """How this role's requests sample."""
    rate_limits: RateLimits = RateLimits()
    """This role's budget on its API key, kept by all runs and workers on the key together."""
    retry: RetryPolicy = RetryPolicy()
    """How failed requests are retried."""
    price: Price = Price()
    """Token prices, for the cost column of the accounting table."""
    context_overflow: Literal["fail", "truncate"] = "truncate"
    """On a context-length error: fail the request, or cut the longest message and ask once more."""
    truncate_keep_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.5
    """With context_overflow `truncate`: the fraction of the longest message's characters kept (its start)."""
    mode: Literal["interactive", "batch"] = "interactive"
    """How this role's requests are delivered: `interactive` (one chat call each, paced by `rate_limits`) or
    `batch` (the provider's Batch API: JSONL files answered within 24 hours at the batch price, outside the
    per-minute limits; the flow waits between looks and holds nothing meanwhile). Answers land in the same
    response store either way, so a resume or a later iteration may switch modes without paying twice."""
    batch: BatchSettings = BatchSettings()
    """With `mode: batch`: file limits, the enqueued-token cap, polling, attempts and the batch price."""

    def batch_price(self) -> Price:
        """What a batch request costs: `batch.price`, or half of `price` (the usual batch discount)."""
        if self.batch.price is not None:
            return self.batch.price
        return Price(prompt_per_million=self.price.prompt_per_million / 2,
                     completion_per_million=self.price.completion_per_million / 2)

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str) -> str:
        if v != EMBEDDED and not re.match(r"^https?://[^\s/]+", v):
            raise ValueError(f"must be an http(s) URL or '{EMBEDDED}', got {v!r}")
        return v

    @field_validator("model")
    @classmethod
    def _model(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be empty")
        return v

    @model_validator(mode="after")
    def _embedded_model(self) -> ApiRole:
        if self.base_url == EMBEDDED and self.model not in EMBEDDED_MODELS:
            raise ValueError(f"model {self.model!r} is not embedded; with base_url '{EMBEDDED}' use one of "
                             f"{', '.join(EMBEDDED_MODELS)}")
        if self.base_url == EMBEDDED and self.mode == "batch":
            raise ValueError(f"mode 'batch' needs a provider with a Batch API (files and batches endpoints); the "
                             f"'{EMBEDDED}' server has none: use mode 'interactive' or a base_url that has one")
        return self

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if _KEY_LIKE.match(v) or (len(v) > 40 and not _ENV_NAME.match(v)):
            raise ValueError(
                "looks like an API key: put the key in the environment and give the variable's name here"
            )
        if not _ENV_NAME.match(v):
            raise ValueError(f"must be an environment variable name, got {v!r}")
        return v


class TeacherConfig(ApiRole):
    sampling: Sampling = Sampling(temperature=0.7, max_tokens=1024)
    """How the answers sample (the teacher's, the evaluation reference's). Paper: temperature 0.7, max_tokens 1024."""


class RefereeConfig(ApiRole):
    sampling: Sampling = Sampling(temperature=0.2, max_tokens=512)
    """How the judgments sample (the referee's, the evaluation judge's). Paper: temperature 0.2, max_tokens 512."""
    prompt_style: Literal["lion", "vicuna"] = "lion"
    """`lion`: explanation, then one score line per assistant; `vicuna`: both scores on the first line."""
    max_reasks: Annotated[int, Field(ge=0)] = 2
    """How many times an unparseable judgment is asked again before it is counted as unresolved."""


class GeneratorConfig(ApiRole):
    sampling: Sampling = Sampling(temperature=1.0, top_p=1.0, max_tokens=None)
    """How the generator's requests sample. Paper: temperature 1.0, top_p 1.0; max_tokens None derives
    it from the seed (`max_tokens_per_seed_word`)."""
    max_tokens_per_seed_word: PositiveInt = 4
    """max_tokens = this x the words of the whole rendered seed (instruction and input), kept within
    max_tokens_floor..max_tokens_ceiling. The official code counted the instruction's words only, so
    seeds with an input (38% of Alpaca) came back cut off; `sampling.max_tokens` overrides this rule."""
    max_tokens_floor: PositiveInt = 64
    """The least max_tokens a generator request gets (a short seed may still inspire a longer task)."""
    max_tokens_ceiling: PositiveInt = 1024
    """The most max_tokens a generator request gets (a very long seed input must not cost without bound)."""
    min_instruction_words: PositiveInt = 3
    """A generated instruction with fewer words is rejected (`too_short`)."""
    max_instruction_words: PositiveInt = 150
    """A generated instruction with more words is rejected (`too_long`); >= min_instruction_words."""
    request_budget_factor: Annotated[float, Field(ge=1)] = 3.0
    """Generator requests per iteration are capped at this x the number of new instructions wanted."""
    max_rounds: PositiveInt = 30
    """Most generation rounds per iteration; each round asks again for the instructions still missing
    (rejected candidates are replaced), within the request budget."""

    @model_validator(mode="after")
    def _word_bounds(self) -> GeneratorConfig:
        if self.max_instruction_words < self.min_instruction_words:
            raise ValueError("max_instruction_words must be >= min_instruction_words")
        if self.max_tokens_ceiling < self.max_tokens_floor:
            raise ValueError("max_tokens_ceiling must be >= max_tokens_floor")
        return self


class StudentGeneration(_Frozen):
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


class StudentConfig(_Frozen):
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


class LoraSettings(_Frozen):
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


class TrainingConfig(_Frozen):
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
    deepspeed_config: str | None = str(Path(__file__).resolve().parents[1] / "deployments/deepspeed/zero3_offload.json")
    """DeepSpeed JSON config for the Trainer; None: no DeepSpeed. Default: the project's ZeRO-3 with optimizer
    and parameters offloaded to CPU (the paper's)."""
    launcher: Literal["deepspeed", "torchrun", "accelerate", "python"] = "deepspeed"
    """What starts the training processes; `python`: one plain process (world size 1)."""
    num_gpus: PositiveInt = 8
    """GPUs (training processes) per node; not used by launcher `python`. Paper: 8 x A100-80G."""
    num_nodes: PositiveInt = 1
    """Machines the fine-tune runs on. More than 1: launcher `deepspeed` with a hostfile (it starts the
    other nodes' ranks itself), or `torchrun` with `master_addr` (each other node runs the same command)."""
    hostfile: str | None = None
    """Hostfile naming the nodes (DeepSpeed's format: `host slots=N` per line), for deepspeed on num_nodes > 1."""
    master_addr: str | None = None
    """Multi-node: the address of the node that runs rank 0, reachable from every node (deepspeed
    `--master_addr`; torchrun's rendezvous host). None with deepspeed: the hostfile's first host."""
    master_port: Annotated[int, Field(gt=0, lt=65536)] = 29500
    """Multi-node: the port of rank 0's rendezvous, the same on every node (a single node takes a free port)."""
    multinode_launcher: Literal["pdsh", "openmpi", "mvapich", "slurm", "mpich", "impi"] = "pdsh"
    """Multi-node with deepspeed: how it starts the ranks on the other nodes (`--launcher`): pdsh over
    passwordless ssh, an MPI, or `srun` inside a Slurm allocation."""
    timeout_s: PositiveInt = 48 * 3600
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


class LoopConfig(_Frozen):
    iterations: PositiveInt = 3
    """Lion iterations (imitation, discrimination, generation); `lion run --iterations` overrides it. Paper: 3."""
    tau: NonNegFloat = 1.0
    """An instruction is hard when score_T - score_S >= tau (means over both orders)."""
    new_instructions_per_iteration: PositiveInt = 6000
    """N: new instructions generated per iteration; they become the next Train Pool and join the Cache
    Pool. Paper: 6000."""
    hard_easy_ratio: tuple[NonNegFloat, NonNegFloat] = (1.0, 1.0)
    """[hard, easy]: how N is split between hard and easy seeds (a side without seeds gives its share to
    the other). Paper: [1, 1]."""
    rouge_l_threshold: Annotated[float, Field(gt=0, le=1)] = 0.7
    """A candidate is rejected when its ROUGE-L F1 against any pool instruction is above this."""
    rouge_tokenizer: Literal["rouge", "unicode"] = "rouge"
    """`rouge`: rouge-score's own (ASCII letters and digits only); `unicode`: for non-English pools."""
    random_seed: int = 42
    """Seed of the generator's seed draws, the student's sampling and the fine-tune's shuffling."""

    @field_validator("hard_easy_ratio")
    @classmethod
    def _ratio(cls, v: tuple[float, float]) -> tuple[float, float]:
        if sum(v) <= 0:
            raise ValueError("hard and easy parts must not both be 0")
        return v


class DataConfig(_Frozen):
    seed: str | None = None
    """Seed instructions: a JSON, JSONL, Parquet or CSV path or fsspec URI, or `hf:<org>/<name>`."""


class StorageConfig(_Frozen):
    runs_root: str = "runs"
    """Local folder or fsspec URI (s3://, gs://, memory://) under which each run keeps its files."""
    response_store: str | None = None
    """SQLite file of every API response (a local path). Default: <runs_root>/responses.sqlite when
    runs_root is local; required when runs_root is remote. Shared by runs, so no request is paid twice."""

    @model_validator(mode="after")
    def _store_is_local(self) -> StorageConfig:
        if self.response_store is not None and "://" in self.response_store:
            raise ValueError("response_store must be a local path (SQLite needs a local file system)")
        if self.response_store is None and "://" in self.runs_root:
            raise ValueError("runs_root is remote: set response_store to a local path")
        if self.checkpoints_root is not None and "://" in self.checkpoints_root:
            raise ValueError("checkpoints_root must be a local path")
        if self.checkpoints_root is None and "://" in self.runs_root:
            raise ValueError("runs_root is remote: set checkpoints_root to a local path")
        return self

    def checkpoint_dir(self, run_id: str, k: int) -> str:
        """Iteration k's training folder; its model is `<this>/final`."""
        return self._checkpoints(run_id, f"iter-{k}")

    def final_checkpoint_dir(self, run_id: str) -> str:
        """The run's deliverable: the student trained on the last Train Pool, after the last iteration."""
        return self._checkpoints(run_id, "final")

    def _checkpoints(self, run_id: str, name: str) -> str:
        root = self.checkpoints_root or os.path.join(self.runs_root, run_id, "checkpoints")
        return os.path.abspath(os.path.expanduser(os.path.join(root, run_id if self.checkpoints_root else "", name)))

    checkpoints_root: str | None = None
    """Local folder for student checkpoints. Default: <runs_root>/<run id>/checkpoints when runs_root is
    local; required when runs_root is remote (training writes to a local file system)."""

    def response_store_path(self) -> str:
        return os.path.abspath(os.path.expanduser(self.response_store or os.path.join(self.runs_root, "responses.sqlite")))

    @field_validator("runs_root")
    @classmethod
    def _root(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be empty")
        return v.rstrip("/") or "/"


class OrchestrationConfig(_Frozen):
    """How the flows split and retry work; the algorithm does not depend on it."""

    shard_size: PositiveInt = 256
    """Rows per API task: a task retries, caches and holds a rate-limit slot for one shard."""
    max_parallel_tasks: PositiveInt = 4
    """Bound of each flow's task runner (threads)."""
    shards_in_flight_per_key: PositiveInt = 2
    """Slots of each API key's global concurrency limit. Each shard paces itself at the role's limits
    divided by this, so all runs and workers on one key together stay within the key's budget."""
    task_retries: Annotated[int, Field(ge=0)] = 3
    """Prefect retries of a failed task (an API shard, a fine-tune, a stage's step); 0: none."""
    retry_delay_s: NonNegFloat = 30.0
    """Seconds before a task's first retry; doubled for each further one, jittered."""
    gpu_slots: PositiveInt = 1
    """GPU tasks (the fine-tune, the student's answers: tasks tagged `gpu`) that may run at once across
    every run and worker on this Prefect server, once `lion limits apply` has set the tag limit; 1: two
    runs on one pool never use its GPUs at the same time. Without `limits apply` there is no GPU limit."""
    max_failed_fraction: Annotated[float, Field(ge=0, le=1)] = 0.02
    """A shard whose failed requests (after the gateway's own retries) exceed this fraction fails, so the
    task is retried and only the failed requests are sent again; below it they are kept as failures."""
    result_storage: str | None = None
    """Where Prefect keeps the iterations' task results: an fsspec URI (`s3://bucket/lion/results`, a
    mounted `/srv/lion/results`) or a saved storage block (`s3-bucket/lion-results`). A retried run in a
    new container or pod finds its finished tasks there. None: Prefect's default (local, or the block
    named by PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK)."""

    @field_validator("result_storage")
    @classmethod
    def _storage_location(cls, v: str | None) -> str | None:
        if v is None or "://" in v or v.startswith("/") or re.fullmatch(r"[a-z0-9-]+/[A-Za-z0-9_-]+", v):
            return v
        raise ValueError(f"must be an fsspec URI (s3://bucket/prefix), an absolute path or a block slug "
                         f"(block-type/block-name), got {v!r}")


class EvaluationConfig(_Frozen):
    """Judging checkpoints against a reference model (`lion evaluate`, the lion-evaluate deployment)."""

    eval_set: str | None = None
    """Questions: JSONL, JSON or Parquet with the text in question/text/instruction/turns and an
    optional category (Vicuna-80's question.jsonl loads as it is)."""
    reference: TeacherConfig = TeacherConfig()
    """The model the students are compared with (ChatGPT in the paper)."""
    judge: RefereeConfig | None = None
    """The judge (GPT-4 in the paper); None: the run's referee."""
    min_coverage: Annotated[float, Field(ge=0, le=1)] = 0.9
    """Fail the evaluation when fewer than this fraction of questions is judged in either order."""
    output_root: str | None = None
    """Where evaluations are written; default <runs_root>/evaluations."""
    after_run: bool = False
    """`lion run` ends by evaluating the base student, every checkpoint and the final one on `eval_set`
    (evaluation `<run id>-eval`) and prints their relative scores with the iterations."""

    @model_validator(mode="after")
    def _after_run_needs_questions(self) -> EvaluationConfig:
        if self.after_run and not self.eval_set:
            raise ValueError("after_run needs an eval_set")
        return self

    def root(self, runs_root: str) -> str:
        return self.output_root or f"{runs_root.rstrip('/')}/evaluations"


class RunConfig(_Frozen):
    teacher: TeacherConfig = TeacherConfig()
    """The teacher T: answers the Train Pool (imitation) and the Cache Pool (discrimination). Paper: gpt-3.5-turbo."""
    referee: RefereeConfig = RefereeConfig()
    """The referee R: scores the teacher's and the student's answers 1-10, in both orders."""
    generator: GeneratorConfig = GeneratorConfig()
    """The generator G: writes new instructions from hard and easy seeds."""
    student: StudentConfig = StudentConfig()
    """The student S: the open model that is fine-tuned on the teacher's answers."""
    training: TrainingConfig = TrainingConfig()
    """The student's fine-tune in each iteration's imitation stage."""
    loop: LoopConfig = LoopConfig()
    """The Lion loop: iterations, the hard/easy split and the novelty filter of new instructions."""
    data: DataConfig = DataConfig()
    """The seed instructions both pools start from."""
    storage: StorageConfig = StorageConfig()
    """Where runs, API responses and checkpoints are kept."""
    orchestration: OrchestrationConfig = OrchestrationConfig()
    """How the flows split and retry work; the algorithm does not depend on it."""
    evaluation: EvaluationConfig = EvaluationConfig()
    """Judging checkpoints against a reference model (`lion evaluate`, `evaluation.after_run`)."""

    def config_hash(self) -> str:
        """sha256 of the canonical JSON form of the run's identity (`identity_of`): equal whatever the
        YAML layout, and unchanged by operations settings, so a resume may change those."""
        canonical = json.dumps(identity_of(self.model_dump(mode="json")), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def to_json_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


_API_ROLES = ("teacher", "referee", "generator", "evaluation.reference", "evaluation.judge")
OPERATIONS = (
    *(f"{role}.{field}" for role in _API_ROLES for field in ("base_url", "api_key_env", "rate_limits", "retry", "price",
                                                                     "mode", "batch")),
    "training.timeout_s", "training.hostfile", "training.master_addr", "training.master_port",
    "training.multinode_launcher",
    "training.deepspeed_config", "evaluation.eval_set",  # locations, absolute once loaded: a moved checkout resumes
    "data.seed",  # read once, when the run is created; run.json keeps its sha256
    "storage", "orchestration", "evaluation.output_root",
)
"""Config fields that say how and where a run is carried out, not what it computes: where the API is
and under which key, how fast and how often it is called, what it costs, timeouts, parallelism and
where files live. A resume may change them (the run records what changed); every other field is
the run's identity, and a resume that changes one is refused."""


def identity_of(config: dict[str, Any]) -> dict[str, Any]:
    """A config's JSON form (`RunConfig.to_json_dict`) without its OPERATIONS fields."""
    out = json.loads(json.dumps(config))
    for path in OPERATIONS:
        *parents, leaf = path.split(".")
        node = out
        for name in parents:
            node = node.get(name) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
    training = out.get("training")
    if isinstance(training, dict) and training.get("method", "full") == "full":
        # A full fine-tune ignores the adapter settings, and runs made before `method` existed were full:
        # leaving both out keeps their hash, so their cached tasks and committed files still match.
        training.pop("method", None)
        training.pop("lora", None)
    if isinstance(training, dict) and training.get("max_steps") is None:
        training.pop("max_steps", None)  # added later; left out when unset, so older runs keep their hash
    return out


def config_changes(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(dotted field, old value, new value) of every leaf field that differs between two JSON forms."""
    changes: list[tuple[str, Any, Any]] = []

    def walk(a: Any, b: Any, path: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b)):
                walk(a.get(key), b.get(key), f"{path}.{key}" if path else key)
        elif a != b:
            changes.append((path, a, b))

    walk(old, new, "")
    return changes


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys instead of silently keeping the last one."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, yaml.Node] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first at line {seen[key].start_mark.line + 1})",
                key_node.start_mark,
            )
        seen[key] = key_node
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _format_validation_error(source: str, err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"]) or "<top level>"
        msg = e["msg"].removeprefix("Value error, ")
        got = ""
        secret_field = "api_key_env" in e["loc"]  # a pasted key must not be echoed into logs
        if e["type"] not in ("missing", "extra_forbidden") and "input" in e and not secret_field:
            shown = repr(e["input"])
            got = f" (got {shown[:80]}{'...' if len(shown) > 80 else ''})"
        if e["type"] == "extra_forbidden":
            msg = "unknown field"
        lines.append(f"  - {where}: {msg}{got}")
    n = len(lines)
    return f"{source}: {n} invalid field{'s' if n != 1 else ''}:\n" + "\n".join(lines)


def parse_config(data: Any, source: str = "<config>") -> RunConfig:
    """Validate an already-parsed mapping; raises ConfigError listing every bad field."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections, got {type(data).__name__}")
    try:
        return RunConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(source, err)) from None


def load_config(path: str | Path) -> RunConfig:
    """Load and validate a YAML run config."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{p}: config file not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{p}: cannot read config: {err}") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err)
        raise ConfigError(f"{p}: invalid YAML{where}: {problem}") from None
    if isinstance(data, dict):
        data = _resolve_paths(data, p.resolve().parent)
    return parse_config(data, str(p))


PATH_FIELDS = ("data.seed", "training.deepspeed_config", "training.hostfile", "evaluation.eval_set",
               "evaluation.output_root", "storage.runs_root", "storage.response_store", "storage.checkpoints_root")


def _resolve_paths(data: dict[str, Any], base: Path) -> dict[str, Any]:
    """Relative local paths written in a config file, made absolute against the file's folder, so a
    config means the same from any working directory (a worker's, a container's, `lion config check`'s)."""

    def resolve(value: Any) -> Any:
        if not isinstance(value, str) or not value or "://" in value or value.startswith(("hf:", "embedded:")):
            return value
        path = Path(value).expanduser()
        return value if path.is_absolute() else os.path.normpath(base / path)

    out = json.loads(json.dumps(data))
    for dotted in PATH_FIELDS:
        section, field = dotted.split(".")
        if isinstance(out.get(section), dict) and field in out[section]:
            out[section][field] = resolve(out[section][field])
    student = out.get("student")
    if isinstance(student, dict) and isinstance(student.get("model"), str):
        model = student["model"]
        if model.startswith(("./", "../")) or (not Path(model).is_absolute() and (base / model).exists()):
            student["model"] = resolve(model)
    return out
