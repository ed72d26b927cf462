"""What the stages hand each other: frozen, typed results along the arrows of the paper's Figure 2.

imitation -> ImitationResult (the teacher's answers for the Train Pool, the checkpoint it trained)
discrimination -> DiscriminationResult (the referee's verdicts on the Cache Pool, hard/easy counts)
generation -> GenerationResult (the candidates, the next iteration's pools, rejections by reason)
iteration -> IterationSummary (kept with the run as `summary.json`, read back typed)

They carry references (PoolRef: URI + content hash), paths and figures, never data, so Prefect can
persist them as task and flow results and a resumed run reads them back as they were.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from lion_core.store import PoolRef


class Result(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    def __setstate__(self, state: dict[str, Any]) -> None:
        # A result pickled by older code (Prefect's persisted task results) lacks the fields added since:
        # they take their defaults, so a run made before them resumes.
        values = state.get("__dict__", {})
        for name, info in type(self).model_fields.items():
            if name not in values and not info.is_required():
                values[name] = info.get_default(call_default_factory=True)
        super().__setstate__(state)


class UsageRow(Result):
    """One role's API usage in one stage: what was asked, what the store answered, what it cost."""

    role: str
    stage: str = "all"
    """The stage the requests were made for; `all` in a row summed over stages (per_role)."""
    mode: str = "interactive"
    """How the calls were made: `interactive` chat calls, or `batch` (the Batch API, at the batch price)."""
    requests: int = 0
    """Requests asked for (after removing duplicates within a batch)."""
    cached: int = 0
    """Of those, answered from the response store without a call."""
    calls: int = 0
    """HTTP attempts made."""
    retries: int = 0
    failures: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0


USAGE_FIELDS = ("requests", "cached", "calls", "retries", "failures", "prompt_tokens", "completion_tokens", "cost_usd")


def merge_usage(tables: Iterable[Sequence[UsageRow]]) -> list[UsageRow]:
    """Sum usage rows of several tasks per (role, stage, mode), sorted by role, stage, then mode."""
    acc: dict[tuple[str, str, str], dict[str, Any]] = {}
    for table in tables:
        for row in table:
            cur = acc.setdefault((row.role, row.stage, row.mode), {"role": row.role, "stage": row.stage, "mode": row.mode})
            for f in USAGE_FIELDS:
                cur[f] = cur.get(f, 0) + getattr(row, f)
    return [UsageRow(**acc[k]) for k in sorted(acc)]


def per_role(usage: Sequence[UsageRow]) -> list[UsageRow]:
    """Usage summed over stages, one row per role and mode (stage `all`)."""
    return merge_usage([[r.model_copy(update={"stage": "all"}) for r in usage]])


def total_cost(usage: Sequence[UsageRow]) -> float:
    return sum(r.cost_usd for r in usage)


class ShardResult(Result):
    """An API task's share of a stage: its part file, not yet committed, its usage and its failures."""

    part: PoolRef
    usage: list[UsageRow]
    failed: int = 0
    """Items of the shard without an answer after the gateway's retries (kept in the part as failures)."""
    final: int = 0
    """Of those, items not sent again unless asked (`--retry-failed`): their unusable-reply budget is spent."""


class Shard(Result):
    """Rows [lo, hi) of a pool, the `index`-th shard, written as a part of iteration k's artifact `name`."""

    k: int
    name: str
    pool: PoolRef
    index: int
    lo: int
    hi: int


class Judging(Result):
    """Whose answers a judge compares on a shard: the teacher's (or the evaluation's reference) against
    the student's. `role` is the API role that judges (`referee`; evaluations: `judge`). With
    `silent_student` set, an item the student answered with nothing is judged with that text (in an
    evaluation, silence is an answer, and a bad one)."""

    teacher: PoolRef
    student: PoolRef
    role: str = "referee"
    silent_student: str | None = None


class BatchWork(Result):
    """What a stage in batch mode asks the API for, by reference: `answers` of the `role` for `pool`;
    `judgments` of `pool` (`judging`); or iteration k's `generation` from `pool` (the Cache Pool) and
    `judgments`."""

    kind: Literal["answers", "judgments", "generation"]
    k: int
    pool: PoolRef
    judging: Judging | None = None
    judgments: PoolRef | None = None


class BatchPassResult(Result):
    """One look at a stage in batch mode (lion_core.llm.replay.batch_pass). `done`: the stage completes from
    the response store; otherwise the counts are those of the round it waits for. With the usage it recorded."""

    done: bool
    answered: int = 0
    failed: int = 0
    pending: int = 0
    total: int = 0
    batches_live: int = 0
    batches_submitted: int = 0
    asked_interactively: int = 0
    usage: list[UsageRow] = []


class TrainingInputs(Result):
    """What a fine-tune starts from (a model folder, id or `run://` reference) and trains on."""

    start_from: str
    answers: PoolRef


class CheckpointRecord(Result):
    """Which checkpoint an iteration ends with: the one it trained, or one carried forward and why."""

    status: Literal["trained", "carried"]
    source_iteration: int
    reason: str | None
    train_rows: int
    path: str
    """A `run://` reference when the checkpoint is inside the run folder."""


class ImitationResult(Result):
    """Imitation: the teacher's answers for the Train Pool and the student trained on them."""

    teacher_answers: PoolRef
    training: TrainingInputs
    train_data: PoolRef | None
    """What the fine-tune trained on; None when the Train Pool was empty and nothing was trained."""
    checkpoint: str | None
    """The checkpoint the iteration ends with (trained or carried)."""
    checkpoint_record: CheckpointRecord
    usage: list[UsageRow]


class DiscriminationReport(Result):
    """The referee's verdicts in figures (lion_core.discrimination.judging.discrimination_report)."""

    items: int
    coverage_teacher_first: float
    coverage_student_first: float
    resolved: int
    unresolved: int
    unresolved_by_reason: dict[str, int]
    hard: int
    hard_empty_answer: int
    easy: int
    zero_scores: int
    hard_fraction: float
    order_inconsistency_rate: float
    mean_teacher_score: float | None
    mean_student_score: float | None
    teacher_score_histogram: dict[str, int]
    student_score_histogram: dict[str, int]
    gap_histogram: dict[str, int]
    reasks: int
    missing_answer: int = 0


class DiscriminationResult(Result):
    """Discrimination: the Cache Pool's teacher and student answers and the referee's verdicts."""

    judgments: PoolRef
    teacher_answers: PoolRef
    student_answers: PoolRef
    report: DiscriminationReport
    usage: list[UsageRow]


class SeedInputFigures(Result):
    requests: int
    truncated: int
    accepted: int


class GenerationReport(Result):
    """What generation asked for, got and rejected (lion_core.generation.rounds.generate)."""

    target: int
    quota: dict[str, int]
    accepted: dict[str, int]
    accepted_total: int
    requests: int
    request_budget: int
    rounds: int
    outcome: str
    rejected_by_reason: dict[str, int]
    truncated_by_reason: dict[str, int]
    by_seed_input: dict[str, SeedInputFigures]
    fresh_draws: int
    stored_draws: int
    hard_seeds: int
    easy_seeds: int
    filter_seconds: float = 0.0
    """Time spent in the ROUGE-L novelty filter, all rounds together."""


class Candidates(Result):
    """The generator task's output: every candidate with its outcome, and the figures."""

    candidates: PoolRef
    report: GenerationReport
    usage: list[UsageRow]


class Pools(Result):
    """An iteration's Train and Cache Pools."""

    train_pool: PoolRef
    cache_pool: PoolRef


class GenerationResult(Result):
    """Generation: the candidates and the next iteration's pools, committed together."""

    candidates: PoolRef
    next_pools: Pools
    report: GenerationReport
    usage: list[UsageRow]


class FinalResult(Result):
    """The final imitation (on the last generation's Train Pool) and the published final checkpoint."""

    final_checkpoint: str
    imitation: ImitationResult


class IterationSummary(Result):
    """One iteration in figures: kept with the run as `summary.json`, shown in the UI and by `lion run`."""

    model_config = ConfigDict(frozen=True, extra="ignore")  # a summary written by a later version still reads

    run_id: str
    iteration: int
    train_pool: int
    cache_pool: int
    next_train_pool: int
    next_cache_pool: int
    judged: int
    hard: int
    easy: int
    unresolved: int
    missing_answer: int = 0
    hard_fraction: float
    coverage_teacher_first: float
    coverage_student_first: float
    order_inconsistency_rate: float
    mean_teacher_score: float | None
    mean_student_score: float | None
    generation_target: int
    accepted: int
    accepted_hard: int
    accepted_easy: int
    generation_requests: int
    generation_outcome: str
    rejected_by_reason: dict[str, int]
    usage: list[UsageRow]
    usage_by_role: list[UsageRow]
    cost_usd: float
    checkpoint: str | None
    files: dict[str, str]
    plots: dict[str, str] = {}
    checkpoint_status: str | None = None
    checkpoint_carried_from: int | None = None
    checkpoint_reason: str | None = None
    hard_empty_answer: int = 0
    zero_scores: int = 0
    unresolved_by_reason: dict[str, int] = {}
    rouge_filter_seconds: float = 0.0
    truncated_by_reason: dict[str, int] = {}
    by_seed_input: dict[str, SeedInputFigures] = {}
    fresh_draws: int = 0
    stored_draws: int = 0


class OpenedRun(Result):
    """A run folder, created or reopened; `changed` lists operations settings that differ on a resume."""

    run_uri: str
    created_at: str
    changed: list[tuple[str, Any, Any]] = []


class OpenedEvaluation(Result):
    """An evaluation folder, created or reopened, with its questions as a pool."""

    root: str
    uri: str
    created_at: str
    questions: PoolRef


class Scored(Result):
    """Relative scores per checkpoint label (lion_core.evaluation.checkpoint_scores: the headline, its
    interval, win/tie/loss, coverage and the same per category), the files that keep every answer and
    judgment, and the charts."""

    scores: dict[str, dict[str, Any]]
    files: dict[str, str]
    plots: dict[str, str]


class EvaluationResult(Scored):
    """What `lion-evaluate` returns: the evaluation's id and folder, and its scores."""

    eval_id: str
    uri: str


class CompareResult(Result):
    """What `lion-compare` returns: the evaluation it judged in, each run's score and cost, and every pair's
    paired difference (lion_core.compare)."""

    eval_id: str
    uri: str
    runs: list[dict[str, Any]]
    pairs: list[dict[str, Any]]


class RunEvaluation(Result):
    eval_id: str
    scores: dict[int | str, dict[str, Any]]
    """Keyed `base`, the iteration number and `final` (lion_core.evaluation.run_scores)."""


class RunResult(Result):
    """What `lion` returns: every iteration's summary, the final checkpoint, and its evaluation."""

    run_id: str
    run_uri: str
    iterations: list[IterationSummary]
    final_checkpoint: str
    final: dict[str, Any] | None
    """The final checkpoint's report (`final.json`), None before it exists."""
    evaluation: RunEvaluation | None


class ModelExport(Result):
    """What `lion export-model` wrote."""

    source: str
    out: str
    kind: Literal["full", "adapter", "merged"]
    adapter_base: str | None
    """The base model an adapter (or a merged model) was made from; None for a full fine-tune."""
    files: list[str]


class DatasetExport(Result):
    """What `lion export-dataset` (and the `lion-export` flow) wrote, and where it was pushed."""

    run_id: str
    out: str
    data_file: str
    rows: int
    answered: int
    """Rows with a teacher answer (the others are listed with their failure)."""
    by_origin: dict[str, int]
    by_iteration: dict[int, int]
    sha256: str
    """Of the Parquet file."""
    pushed_to: str | None = None
