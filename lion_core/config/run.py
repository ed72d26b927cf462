"""The Lion loop and everything around it: the loop's settings, the seed data, storage, orchestration,
evaluation, and `RunConfig`, the whole run config that holds every section.

Locations (the seed file, the evaluation questions and output, the whole `storage` section) and the
whole `orchestration` section are operations (`OPERATION`): a resume may move a run's files or change
how its work is split and retried. The loop's settings are the run's identity.
"""

from __future__ import annotations

import os
import re
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from lion_core.config.base import LOCAL_PATH, OPERATION, NonNegFloat, PositiveInt, Section, marked_paths
from lion_core.config.identity import identity_hash, strip_operations
from lion_core.config.roles import GeneratorConfig, RefereeConfig, TeacherConfig
from lion_core.config.student import StudentConfig, TrainingConfig
from lion_core.database import check_postgres_url, is_postgres, redact
from lion_core.errors import ConfigError


class LoopConfig(Section):
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
    selection: Literal["adversarial", "random", "one_shot"] = "adversarial"
    """Where the generator's example instructions come from. `adversarial` (the paper): the items the
    referee labelled hard feed the hard template, the easy ones the easy template. `random` (a control):
    both templates draw uniformly from the whole Cache Pool whatever the referee said, at the same hard:easy
    ratio and for the same number of new instructions; the referee still runs and its verdicts are kept
    and reported, so both cost the same API calls. `one_shot` (the Alpaca-style baseline): no loop; the
    generator writes `iterations` rounds of new instructions from uniformly drawn Cache Pool examples (no
    student, no referee), then the teacher answers the seeds and every new instruction and the student is
    fine-tuned once, from the base model, for as many optimizer steps as the loop's fine-tunes of the same
    pools would have taken in all. Compare them with `lion compare`."""

    @field_validator("hard_easy_ratio")
    @classmethod
    def _ratio(cls, v: tuple[float, float]) -> tuple[float, float]:
        if sum(v) <= 0:
            raise ValueError("hard and easy parts must not both be 0")
        return v


class DataConfig(Section):
    # An operation: the seeds are read once, when the run is created, and run.json keeps their sha256.
    seed: Annotated[str | None, OPERATION, LOCAL_PATH] = None
    """Seed instructions: a JSON, JSONL, Parquet or CSV path or fsspec URI, or `hf:<org>/<name>`."""


class StorageConfig(Section):
    runs_root: Annotated[str, LOCAL_PATH] = "runs"
    """Local folder or fsspec URI (s3://, gs://, memory://) under which each run keeps its files."""
    response_store: Annotated[str | None, LOCAL_PATH] = None
    """Where every API response is kept, shared by runs so that no request is paid twice: a SQLite file
    (a local path; default <runs_root>/responses.sqlite when runs_root is local) or a PostgreSQL database,
    `postgresql://user@host:5432/database`, which workers on several machines share (required when
    runs_root is remote, unless a local path is given). The batch ledger and the spend per run live there too."""
    password_env: str | None = "LION_STORE_PASSWORD"
    """Environment variable holding a PostgreSQL store's password (never in the URL or this file); null
    for a server that needs none (trust, peer or ~/.pgpass)."""
    password_secret: str | None = None
    """A Prefect Secret block holding a PostgreSQL store's password: read when a flow starts, used when
    `password_env` is unset."""
    claim_lease_s: Annotated[float, Field(ge=5)] = 60.0
    """Seconds a request in flight stays claimed by a worker after its last renewal: a worker that dies
    without trace (its machine gone) holds its requests that long before another may send them."""

    @field_validator("response_store")
    @classmethod
    def _store(cls, v: str | None) -> str | None:
        if v is not None and "://" in v:
            if not is_postgres(v):
                raise ValueError(f"{redact(v)}: a response store is a local SQLite path or a postgresql:// URL")
            try:
                check_postgres_url(v, "")
            except ConfigError as err:
                raise ValueError(str(err).removeprefix(": ")) from None
        return v

    @field_validator("password_env")
    @classmethod
    def _env_name(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", v):
            raise ValueError("must be the name of an environment variable (letters, digits, _), not a password")
        return v

    @model_validator(mode="after")
    def _store_is_local(self) -> StorageConfig:
        if self.password_secret and not self.password_env:
            raise ValueError("password_secret needs password_env: the variable the block's password is put in")
        if self.response_store is None and "://" in self.runs_root:
            raise ValueError("runs_root is remote: set response_store to a postgresql:// URL (or a local path)")
        if self.checkpoints_root is not None and "://" in self.checkpoints_root:
            raise ValueError("checkpoints_root must be a local path (a shared file system's mount for a run that "
                             "moves between machines)")
        if self.checkpoints_root is None and "://" in self.runs_root:
            raise ValueError("runs_root is remote: set checkpoints_root to a local path")
        return self

    @property
    def shared_store(self) -> bool:
        """The response store is a PostgreSQL database (reachable from other machines)."""
        return self.response_store is not None and is_postgres(self.response_store)

    def checkpoint_dir(self, run_id: str, k: int) -> str:
        """Iteration k's training folder; its model is `<this>/final`."""
        return self._checkpoints(run_id, f"iter-{k}")

    def final_checkpoint_dir(self, run_id: str) -> str:
        """The run's deliverable: the student trained on the last Train Pool, after the last iteration."""
        return self._checkpoints(run_id, "final")

    def _checkpoints(self, run_id: str, name: str) -> str:
        root = self.checkpoints_root or os.path.join(self.runs_root, run_id, "checkpoints")
        return os.path.abspath(os.path.expanduser(os.path.join(root, run_id if self.checkpoints_root else "", name)))

    checkpoints_root: Annotated[str | None, LOCAL_PATH] = None
    """Local folder for student checkpoints. Default: <runs_root>/<run id>/checkpoints when runs_root is
    local; required when runs_root is remote (training writes to a local file system)."""

    def response_store_path(self) -> str:
        """The SQLite file's absolute path, or the PostgreSQL URL (without a password)."""
        if self.shared_store:
            return self.response_store
        return os.path.abspath(os.path.expanduser(self.response_store or os.path.join(self.runs_root, "responses.sqlite")))

    def local_folder(self) -> str:
        """A local folder for what a run keeps beside its store (run locks, previews): the SQLite store's
        folder, or, with a PostgreSQL store, the runs_root when local, else a cache folder of this machine."""
        if not self.shared_store:
            return os.path.dirname(self.response_store_path())
        if "://" not in self.runs_root:
            return os.path.abspath(os.path.expanduser(self.runs_root))
        return os.path.join(os.path.expanduser(os.environ.get("XDG_CACHE_HOME", "~/.cache")), "lion")

    @field_validator("runs_root")
    @classmethod
    def _root(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be empty")
        return v.rstrip("/") or "/"


class OrchestrationConfig(Section):
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
    """The share of a stage's items that may stay without an answer after the gateway's retries (kept as
    failures with their reasons). Beyond it, the shards with failures worth sending again run again, up
    to task_retries times; still beyond it, the run stops and a resume sends only the failed requests."""
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


class BudgetConfig(Section):
    """What a run may spend on the APIs, in US dollars at the roles' `price` (interactive calls; a role in
    batch mode counts at its batch price when its answers are collected). A request that would take what
    the run has spent, plus what its requests in flight may cost, past a cap is not sent: the stage stops
    with every paid answer stored, and `lion run` exits with code 3, naming the cap and the spend. Raise
    the cap and `lion run --resume RUN` goes on without paying twice. Spend is kept per run id in the
    response store (an evaluation, `<run id>-eval`, counts on its own id)."""

    max_cost_usd: Annotated[float, Field(gt=0)] | None = None
    """The most the run may spend on all roles together; None: no cap."""
    per_role: dict[Literal["teacher", "referee", "generator", "reference", "judge"], Annotated[float, Field(gt=0)]] = {}
    """Caps of single roles (`{teacher: 40, referee: 30}`), besides the run's; a role without one has none."""
    estimated_reply_tokens: PositiveInt = 512
    """A request's cost is reserved before it is sent at its prompt's estimate plus its max_tokens; for a
    request without max_tokens, plus this many completion tokens. The reply's usage settles it."""

    def capped(self) -> bool:
        return self.max_cost_usd is not None or bool(self.per_role)


class EvaluationConfig(Section):
    """Judging checkpoints against a reference model (`lion evaluate`, the lion-evaluate deployment)."""

    # An operation: a location, absolute once loaded, so a run resumes from a moved checkout.
    eval_set: Annotated[str | None, OPERATION, LOCAL_PATH] = None
    """Questions: JSONL, JSON or Parquet with the text in question/text/instruction/turns and an
    optional category (Vicuna-80's question.jsonl loads as it is)."""
    reference: TeacherConfig = TeacherConfig()
    """The model the students are compared with (ChatGPT in the paper)."""
    judge: RefereeConfig | None = None
    """The judge (GPT-4 in the paper); None: the run's referee."""
    min_coverage: Annotated[float, Field(ge=0, le=1)] = 0.9
    """Fail the evaluation when fewer than this fraction of questions is judged in either order."""
    output_root: Annotated[str | None, OPERATION, LOCAL_PATH] = None
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


class RunConfig(Section):
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
    storage: Annotated[StorageConfig, OPERATION] = StorageConfig()
    """Where runs, API responses and checkpoints are kept."""
    orchestration: Annotated[OrchestrationConfig, OPERATION] = OrchestrationConfig()
    """How the flows split and retry work; the algorithm does not depend on it."""
    evaluation: EvaluationConfig = EvaluationConfig()
    """Judging checkpoints against a reference model (`lion evaluate`, `evaluation.after_run`)."""
    budget: Annotated[BudgetConfig, OPERATION] = BudgetConfig()
    """Caps on what the run spends on the APIs, at the roles' prices (`lion plan` projects the cost first).
    A request that could take the run's spend past a cap is not sent: the stage stops with every paid
    answer stored and `lion run` exits with code 3, naming the cap and the spend. Raise the cap and
    `lion run --resume RUN` goes on without paying twice. Each run id keeps its own spend (a preview's
    and an evaluation's too)."""

    def config_hash(self) -> str:
        """sha256 of the canonical JSON form of the run's identity (`identity_of`): equal whatever the
        YAML layout, and unchanged by operations settings, so a resume may change those."""
        return identity_hash(self.to_json_dict(), OPERATIONS)

    def to_json_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


OPERATIONS = tuple(marked_paths(RunConfig, OPERATION))
"""Config fields that say how and where a run is carried out, not what it computes: where the API is
and under which key, how fast and how often it is called, what it costs, timeouts, parallelism and
where files live. A resume may change them (the run records what changed); every other field is
the run's identity, and a resume that changes one is refused."""


def identity_of(config: dict[str, Any]) -> dict[str, Any]:
    """A config's JSON form (`RunConfig.to_json_dict`) without its OPERATIONS fields."""
    return strip_operations(config, OPERATIONS)
