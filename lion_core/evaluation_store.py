"""An evaluation's folder: its questions as a pool, and every answer, judgment and score kept in Parquet."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lion_core import evaluation as ev
from lion_core.config import RunConfig
from lion_core.files import join_uri, write_bytes_atomic
from lion_core.plots import relative_by_category, relative_by_checkpoint
from lion_core.pools import POOL_SCHEMA_VERSION, pool_table
from lion_core.results import OpenedEvaluation, Scored
from lion_core.rows import count, to_table
from lion_core.store import PoolRef, RunStore

SCORES_SCHEMA_VERSION = "eval-scores/1"
RESULTS_SCHEMA_VERSION = "eval-results/2"


@dataclass(frozen=True, slots=True)
class ResultRow:
    """One question for one checkpoint: both answers, the four scores and both raw judgments."""

    checkpoint: str
    question_id: str
    category: str
    question: str
    input: str
    reference_answer: str | None
    student_answer: str | None
    reference_score_reference_first: float | None
    student_score_reference_first: float | None
    reference_score_student_first: float | None
    student_score_student_first: float | None
    judgment_reference_first: str | None
    judgment_student_first: str | None


@dataclass(frozen=True, slots=True)
class ScoreRow:
    """One checkpoint in one category (`all` first): lion_core.evaluation.scores_table."""

    checkpoint: str
    category: str
    questions: int = count()
    relative_score: float | None
    relative_score_ci95_low: float | None
    relative_score_ci95_high: float | None
    relative_score_reference_first: float | None
    relative_score_student_first: float | None
    wins: int = count()
    ties: int = count()
    losses: int = count()
    judged_reference_first: int = count()
    judged_student_first: int = count()
    failed_reference_first: int = count()
    failed_student_first: int = count()
    order_inconsistency_rate: float | None


def open_evaluation(config: RunConfig, eval_id: str, eval_set: str) -> OpenedEvaluation:
    """Load and check the questions, then write them as the evaluation's pool (once; a rerun reopens it)."""
    store = RunStore(config.evaluation.root(config.storage.runs_root), eval_id, config)
    if not store.exists():
        rows = ev.question_pool(ev.load_eval_set(eval_set))
        ref = store.write_table(0, "questions", pool_table(rows), schema_version=POOL_SCHEMA_VERSION)
        store.commit(0, {"questions": ref})
        store.write_run_info(extra={"eval_set": eval_set})
    info = store.read_run_info()
    return OpenedEvaluation(root=store.runs_root, uri=store.run_uri, created_at=info["created_at"],
                            questions=store.ref(0, "questions"))


def detail_rows(label: str, questions: list[dict[str, Any]], judged: Mapping[str, dict[str, Any]],
                student: Mapping[str, dict[str, Any]], reference: Mapping[str, dict[str, Any]]) -> list[ResultRow]:
    """One row per question for one checkpoint: both answers, the four scores and both raw judgments."""
    out = []
    for q in questions:
        meta = json.loads(q["metadata"])
        j, s, ref = judged.get(q["id"], {}), student.get(q["id"], {}), reference.get(q["id"], {})
        out.append(ResultRow(
            checkpoint=label, question_id=str(meta["question_id"]), category=meta["category"],
            question=q["instruction"], input=q["input"], reference_answer=ref.get("answer"),
            student_answer=s.get("answer"),
            reference_score_reference_first=j.get("t_score_t_first"),
            student_score_reference_first=j.get("s_score_t_first"),
            reference_score_student_first=j.get("t_score_s_first"),
            student_score_student_first=j.get("s_score_s_first"),
            judgment_reference_first=j.get("raw_t_first"), judgment_student_first=j.get("raw_s_first"),
        ))
    return out


def score_checkpoints(store: RunStore, questions: PoolRef, judgments: Mapping[str, PoolRef],
                      answers: Mapping[str, PoolRef], reference: PoolRef) -> Scored:
    """Scores per checkpoint label and category, committed as the evaluation's `results` (every answer,
    raw judgment and score) and `scores`; and the two charts, saved beside them."""
    qrows = store.read_table(questions).to_pylist()
    categories = {r["id"]: json.loads(r["metadata"])["category"] for r in qrows}
    ref_answers = {r["id"]: r for r in store.read_table(reference).to_pylist()}
    all_scores: dict[str, dict[str, Any]] = {}
    detail: list[ResultRow] = []
    for label, jref in judgments.items():
        rows = [r for r in store.read_table(jref).to_pylist() if r["label"] != "missing_answer"]
        all_scores[label] = ev.checkpoint_scores(rows, categories, len(qrows))
        student = {r["id"]: r for r in store.read_table(answers[label]).to_pylist()}
        detail += detail_rows(label, qrows, {r["id"]: r for r in rows}, student, ref_answers)
    refs = {
        "results": store.write_table(0, "results", to_table(detail, ResultRow), schema_version=RESULTS_SCHEMA_VERSION,
                                     parents=[questions, reference, *answers.values(), *judgments.values()]),
        "scores": store.write_table(0, "scores", to_table([ScoreRow(**r) for r in ev.scores_table(all_scores)], ScoreRow),
                                    schema_version=SCORES_SCHEMA_VERSION, parents=list(judgments.values())),
    }
    store.commit(0, refs)
    plots = {}
    for name, png in (("relative_by_category", relative_by_category(all_scores)),
                      ("relative_by_checkpoint", relative_by_checkpoint(all_scores))):
        uri = join_uri(store.iteration_uri(0), "plots", f"{name}.png")
        write_bytes_atomic(uri, png)
        plots[name] = uri
    return Scored(scores=all_scores, files={k: store.resolve(v.uri) for k, v in refs.items()}, plots=plots)
