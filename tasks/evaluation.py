"""Evaluation tasks: open an evaluation folder, score the judgments, publish the results."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact

from lion_core import checkpoints, evaluation_store
from lion_core import evaluation as ev
from lion_core.config import RunConfig
from lion_core.files import read_bytes
from lion_core.limits import role_config
from lion_core.report import artifact_key, charts_markdown, file_link
from lion_core.results import OpenedEvaluation, Scored
from lion_core.store import PoolRef
from tasks.common import RunContext, input_cache_key, transient


@task(name="open-evaluation", tags=["lion", "evaluation"], task_run_name="open-{eval_id}", retries=2, retry_delay_seconds=5,
      retry_condition_fn=transient)
def open_evaluation(config: RunConfig, eval_id: str, eval_set: str) -> OpenedEvaluation:
    """Load and check the questions, then write them as the evaluation's pool (once)."""
    return evaluation_store.open_evaluation(config, eval_id, eval_set)


@task(name="score-checkpoints", tags=["lion", "evaluation"], cache_key_fn=input_cache_key, persist_result=True)
def score_checkpoints(ctx: RunContext, questions: PoolRef, judgments: dict[str, PoolRef],
                      answers: dict[str, PoolRef], reference: PoolRef) -> Scored:
    """Scores per checkpoint and category; every answer, raw judgment and score kept in Parquet."""
    return evaluation_store.score_checkpoints(ctx.store(), questions, judgments, answers, reference)


@task(name="publish-evaluation", tags=["lion", "evaluation"], retries=1)
def publish_evaluation(ctx: RunContext, result: Scored) -> None:
    """The scores as the UI's markdown and table artifacts, with the charts."""
    cfg = ctx.config
    reference, judge = role_config(cfg, "reference"), role_config(cfg, "judge")
    key = artifact_key("lion-eval", ctx.run_id)
    md = ev.scores_markdown(f"Evaluation `{ctx.run_id}`", result.scores, f"{reference.model} @ {reference.base_url}",
                            f"{judge.model} @ {judge.base_url}")
    md += "\n\n## Files\n" + "\n".join(f"- {k}: `{v}`" for k, v in {**result.files, **result.plots}.items())
    # embedded as data: URIs, which the UI's artifact page shows (it will not open a file:// link)
    md += "\n\n" + charts_markdown({name: read_bytes(uri) for name, uri in result.plots.items()})
    create_markdown_artifact(md, key=key, description=f"Evaluation {ctx.run_id}")
    create_table_artifact(ev.scores_table(result.scores), key=f"{key}-table",
                          description="Relative score, win/tie/loss and coverage per checkpoint and category")
    for name, uri in result.plots.items():
        create_link_artifact(file_link(uri), link_text=f"{name}.png", key=artifact_key(key, name),
                             description=name.replace("_", " "))


@task(name="record-scores-in-cards", tags=["lion", "evaluation"], retries=1)
def record_scores_in_cards(ctx: RunContext, paths: dict[str, str], scores: dict[str, Any]) -> list[str]:
    """Each Lion checkpoint's model card gets this evaluation's scores; other folders are left alone."""
    return [label for label, path in paths.items() if checkpoints.add_scores_to_card(path, ctx.run_id, scores[label])]
