"""Evaluation tasks: open an evaluation folder, score the judgments, publish the results."""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa
from prefect import task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact

from lion_core import checkpoints
from lion_core import evaluation as ev
from lion_core.limits import role_config
from lion_core.plots import relative_by_category, relative_by_checkpoint
from lion_core.pools import POOL_SCHEMA_VERSION, pool_table
from lion_core.report import charts_markdown
from lion_core.store import PoolRef, RunStore, join_uri, read_bytes, read_table, resolve_uri, write_bytes_atomic
from tasks.common import RunContext, input_cache_key, transient
from tasks.report import _file_link, _key

SCORES_SCHEMA_VERSION = "eval-scores/1"


@task(name="open-evaluation", tags=["lion", "evaluation"], retries=2, retry_delay_seconds=5, retry_condition_fn=transient)
def open_evaluation(config: Any, eval_id: str, eval_set: str) -> dict[str, Any]:
    """Load and check the questions, then write them as the evaluation's pool (once)."""
    store = RunStore(config.evaluation.root(config.storage.runs_root), eval_id, config)
    if not store.exists():
        rows = ev.question_pool(ev.load_eval_set(eval_set))
        ref = store.write_table(0, "questions", pool_table(rows), schema_version=POOL_SCHEMA_VERSION)
        store.commit(0, {"questions": ref})
        store.write_run_info(extra={"eval_set": eval_set})
    info = store.read_run_info()
    return {"root": store.runs_root, "uri": store.run_uri, "created_at": info["created_at"],
            "questions": store.ref(0, "questions")}


@task(name="score-checkpoints", tags=["lion", "evaluation"], cache_key_fn=input_cache_key, persist_result=True)
def score_checkpoints(ctx: RunContext, questions: PoolRef, judgments: dict[str, PoolRef],
                      answers: dict[str, PoolRef], reference: PoolRef) -> dict[str, Any]:
    """Scores per checkpoint and category; every answer, raw judgment and score kept in Parquet."""
    store = ctx.store()
    qrows = read_table(questions).to_pylist()
    meta = {r["id"]: json.loads(r["metadata"]) for r in qrows}
    categories = {i: m["category"] for i, m in meta.items()}
    ref_answers = {r["id"]: r for r in read_table(reference).to_pylist()}
    all_scores: dict[str, dict[str, Any]] = {}
    detail: list[dict[str, Any]] = []
    for label, jref in judgments.items():
        rows = [r for r in read_table(jref).to_pylist() if r["label"] != "missing_answer"]
        all_scores[label] = ev.checkpoint_scores(rows, categories, len(qrows))
        student = {r["id"]: r for r in read_table(answers[label]).to_pylist()}
        judged = {r["id"]: r for r in rows}
        for q in qrows:
            j, s, ref = judged.get(q["id"], {}), student.get(q["id"], {}), ref_answers.get(q["id"], {})
            detail.append({
                "checkpoint": label, "question_id": meta[q["id"]]["question_id"], "category": categories[q["id"]],
                "question": q["instruction"], "input": q["input"], "reference_answer": ref.get("answer"), "student_answer": s.get("answer"),
                "reference_score_reference_first": j.get("t_score_t_first"),
                "student_score_reference_first": j.get("s_score_t_first"),
                "reference_score_student_first": j.get("t_score_s_first"),
                "student_score_student_first": j.get("s_score_s_first"),
                "judgment_reference_first": j.get("raw_t_first"), "judgment_student_first": j.get("raw_s_first"),
            })
    refs = {
        "results": store.write_table(0, "results", pa.Table.from_pylist(detail), schema_version="eval-results/2",
                                     parents=[questions, reference, *answers.values(), *judgments.values()]),
        "scores": store.write_table(0, "scores", pa.Table.from_pylist(ev.scores_table(all_scores)),
                                    schema_version=SCORES_SCHEMA_VERSION, parents=list(judgments.values())),
    }
    store.commit(0, refs)
    plots = {}
    for name, png in (("relative_by_category", relative_by_category(all_scores)),
                      ("relative_by_checkpoint", relative_by_checkpoint(all_scores))):
        uri = join_uri(store.iteration_uri(0), "plots", f"{name}.png")
        write_bytes_atomic(uri, png)
        plots[name] = uri
    return {"scores": all_scores, "files": {k: resolve_uri(v.uri) for k, v in refs.items()}, "plots": plots}


@task(name="publish-evaluation", tags=["lion", "evaluation"], retries=1)
def publish_evaluation(ctx: RunContext, result: dict[str, Any]) -> None:
    cfg = ctx.config
    reference, judge = role_config(cfg, "reference"), role_config(cfg, "judge")
    key = _key("lion-eval", ctx.run_id)
    md = ev.scores_markdown(f"Evaluation `{ctx.run_id}`", result["scores"], f"{reference.model} @ {reference.base_url}",
                            f"{judge.model} @ {judge.base_url}")
    md += "\n\n## Files\n" + "\n".join(f"- {k}: `{v}`" for k, v in {**result["files"], **result["plots"]}.items())
    # embedded as data: URIs, which the UI's artifact page shows (it will not open a file:// link)
    md += "\n\n" + charts_markdown({name: read_bytes(uri) for name, uri in result["plots"].items()})
    create_markdown_artifact(md, key=key, description=f"Evaluation {ctx.run_id}")
    create_table_artifact(ev.scores_table(result["scores"]), key=f"{key}-table",
                          description="Relative score, win/tie/loss and coverage per checkpoint and category")
    for name, uri in result["plots"].items():
        create_link_artifact(_file_link(uri), link_text=f"{name}.png", key=_key(key, name),
                             description=name.replace("_", " "))


@task(name="record-scores-in-cards", tags=["lion", "evaluation"], retries=1)
def record_scores_in_cards(ctx: RunContext, paths: dict[str, str], scores: dict[str, Any]) -> list[str]:
    """Each Lion checkpoint's model card gets this evaluation's scores; other folders are left alone."""
    return [label for label, path in paths.items() if checkpoints.add_scores_to_card(path, ctx.run_id, scores[label])]
