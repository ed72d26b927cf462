"""Evaluation: answers from each checkpoint and from a reference model, judged in both orders."""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from prefect.task_runners import ThreadPoolTaskRunner

from flows.shards import answer_pool, judge_pool
from lion_core.config import load_config
from lion_core.errors import ConfigError
from lion_core.evaluation import NO_ANSWER, check_coverage, resolve_checkpoints
from lion_core.llm.roles import embedded_endpoints
from lion_core.results import EvaluationResult, Judging
from lion_core.store import validate_run_id
from lion_prefect.secrets import export_store_password
from tasks.common import RunContext
from tasks.evaluation import open_evaluation, publish_evaluation, record_scores_in_cards, score_checkpoints
from tasks.limits import ensure_limits
from tasks.student import student_answers


def evaluate_run_name() -> str:
    """`lion-evaluate-<evaluation id>` in the UI."""
    return f"lion-evaluate-{flow_run.parameters.get('name') or f'eval-{flow_run.id}'}"


@flow(name="lion-evaluate", log_prints=True, task_runner=ThreadPoolTaskRunner(max_workers=4), flow_run_name=evaluate_run_name)
def evaluate(config_path: str, checkpoints: list[str], eval_set: str | None = None,
             name: str | None = None) -> EvaluationResult:
    """Relative scores of checkpoints against the config's reference model, judged in both orders by its
    judge (default: the referee).

    Args:
        config_path: The run config (YAML) whose `evaluation` section names the reference and the judge.
        checkpoints: Model folders, `base`, or `run:<run id>` for a run's base model, every checkpoint it
            trained and its final one.
        eval_set: The questions (JSONL, JSON or Parquet); empty: the config's `evaluation.eval_set`.
        name: The evaluation's id, its folder under the evaluations root; empty: one from this flow run.
    """
    logger = get_run_logger()
    config = load_config(config_path)
    export_store_password(config.storage)  # storage.password_secret: the store reads it from the environment
    eval_set = eval_set or config.evaluation.eval_set
    if not eval_set:
        raise ConfigError("no eval set: pass one or set evaluation.eval_set in the config")
    eval_id = validate_run_id(name) if name else f"eval-{flow_run.id}"
    targets = resolve_checkpoints(config, checkpoints)
    opened = open_evaluation(config, eval_id, eval_set)
    ensure_limits(config)
    questions = opened.questions
    roles = ("reference", "judge")
    with embedded_endpoints(config, roles) as embedded:
        ctx = RunContext(config=config, run_id=eval_id, run_key=f"{eval_id}@{opened.created_at}",
                         embedded=embedded, store_root=opened.root)
        reference, _ = answer_pool(ctx, 0, "reference_answers", questions, role="reference", stage="evaluation")
        answers, judgments = {}, {}
        for label, path in targets:
            answers[label] = student_answers(ctx, 0, questions, path, name=f"answers-{label}")
            judging = Judging(teacher=reference, student=answers[label], role="judge", silent_student=NO_ANSWER)
            judgments[label], _ = judge_pool(ctx, 0, f"judgments-{label}", questions, judging, f"judging {label}")
        result = score_checkpoints(ctx, questions, judgments, answers, reference)
        publish_evaluation(ctx, result)
        record_scores_in_cards(ctx, dict(targets), result.scores)
    for label, scores in result.scores.items():
        rel = scores["relative_score"]
        logger.info("%s: relative score %s (win/tie/loss %d/%d/%d)", label, "n/a" if rel is None else f"{rel:.1%}",
                    scores["wins"], scores["ties"], scores["losses"])
    for label, scores in result.scores.items():  # after publishing, so a failed check leaves every file
        check_coverage(label, scores, config.evaluation.min_coverage)
    return EvaluationResult(eval_id=eval_id, uri=opened.uri, **result.model_dump())
