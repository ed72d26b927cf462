"""The Lion loop: N iterations of imitation, discrimination and generation, resumable.

A run is its folder in the store. The flow opens it (creating iteration 0 from the seeds the first
time) and starts at the first iteration whose next pools are not yet committed, so a rerun with the
same run id (the UI's Retry, a new deployment run, `lion run --resume`) continues where the last one
stopped: finished iterations are not visited, and in the unfinished one every task that completed is
a cache hit and every answered request comes from the response store.
"""

from __future__ import annotations

import logging

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from flows.evaluate import evaluate
from flows.export import export
from flows.imitation import final_imitation
from flows.lion_iteration import lion_iteration
from flows.one_shot import one_shot
from lion_core.checkpoints import final_text, is_current_final, read_final_info
from lion_core.config import RunConfig, load_config
from lion_core.evaluation import run_scores
from lion_core.llm.roles import embedded_endpoints
from lion_core.report import read_summaries, summary_text_table
from lion_core.results import EvaluationResult, RunEvaluation, RunResult
from lion_core.runs import record_target, run_lock
from lion_core.store import RunStore, validate_run_id
from lion_prefect.orphans import crash_orphaned_runs
from lion_prefect.secrets import export_store_password
from tasks.common import RunContext
from tasks.limits import ensure_limits
from tasks.pools import grant_unusable_again, open_run
from tasks.report import publish_final_report
from tasks.results import result_storage


def next_iteration(store: RunStore) -> int:
    """The first iteration whose successor pools are not committed (0 for a new run)."""
    k = 0
    while (m := store.manifest(k + 1)) is not None and {"train_pool", "cache_pool"} <= set(m.files):
        k += 1
    return k


def lion_run_name() -> str:
    """`lion-<run id>` in the UI; a run started without an id is named after its flow run, as its id is."""
    run_id = flow_run.parameters.get("run_id")
    return f"lion-{run_id or f'run-{flow_run.id}'}"


@flow(name="lion", log_prints=True, flow_run_name=lion_run_name)
def lion(config_path: str, run_id: str | None = None, iterations: int | None = None, seed: str | None = None,
         export_dataset: bool = False, push_to_hub: str | None = None, retry_failed: bool = False) -> RunResult:
    """Run (or resume) a Lion distillation run until it has `iterations` iterations.

    Args:
        config_path: The run config (YAML), as the worker sees it, e.g. `configs/openai.yaml`.
        run_id: The run to start or continue; empty: a new run named after this flow run (its Retry resumes it).
        iterations: Lion iterations the run should have; empty: the config's `loop.iterations`.
        seed: Seed instructions for a new run (a file, an fsspec URI or `hf:<dataset>`); empty: the config's `data.seed`.
        export_dataset: At the end, write what the run distilled as a Hugging Face dataset folder beside its
            checkpoints (the `lion-export` flow, as a sub-flow).
        push_to_hub: At the end, export the dataset and push it to this Hugging Face dataset repo (user/name).
        retry_failed: Send again the requests given up for good (their budget of unusable replies spent),
            with as many more tries.
    """
    logging.getLogger("lion").setLevel(logging.INFO)  # progress of long stages reaches the run's logs
    config = load_config(config_path)
    export_store_password(config.storage)  # storage.password_secret: the store reads it from the environment
    # No run id: take the flow run's, so the UI's Retry of this flow run resumes the same run.
    run_id = validate_run_id(run_id) if run_id else f"run-{flow_run.id}"
    with run_lock(config, run_id, owner=str(flow_run.id)) as held:  # one live process per run on this machine
        # the flow run that held the run before us is dead: if it still shows Running, close it and free its slots
        crash_orphaned_runs(run_id, flow_run.id, flow_run.name, dead_attempt=held.previous_owner)
        return run_iterations(config_path, config, run_id, iterations or config.loop.iterations, seed,
                              export_dataset, push_to_hub, retry_failed)


def run_iterations(config_path: str, config: RunConfig, run_id: str, total: int, seed: str | None,
                   export_dataset: bool, push_to_hub: str | None, retry_failed: bool = False) -> RunResult:
    """The body of `lion`, run while it holds the run: open it, run the iterations not yet finished, the
    final imitation, the evaluation and the export."""
    logger = get_run_logger()
    opened = open_run(config, run_id, seed)
    if retry_failed:
        logger.info("--retry-failed: %d request(s) given up for their unusable replies get a fresh budget",
                    grant_unusable_again(config))
    ensure_limits(config)
    # Task results of every iteration go where a retry in a fresh container finds them.
    storage = result_storage(config)
    iteration = lion_iteration.with_options(result_storage=storage) if storage else lion_iteration
    store = RunStore(config.storage.runs_root, run_id, config)
    record_target(store, total)  # what `lion status` plans the stages for
    start = next_iteration(store)
    if start:
        logger.info("run %s: iterations 0-%d are finished; continuing at %d", run_id, start - 1, start)
    final = config.storage.final_checkpoint_dir(run_id)
    if start < total or not is_current_final(final, total):
        with embedded_endpoints(config) as embedded:
            ctx = RunContext(config=config, run_id=run_id, run_key=f"{run_id}@{opened.created_at}",
                             embedded=embedded, retry_failed=retry_failed)
            if config.loop.selection == "one_shot":  # the baseline: the same instructions, no loop, one fine-tune
                baseline = one_shot.with_options(result_storage=storage) if storage else one_shot
                publish_final_report(ctx, total, baseline(ctx, start, total))
            else:
                for k in range(start, total):
                    iteration(ctx, k)
                # The last generation's instructions were paid for: train on them too (the paper's final model).
                final_step = final_imitation.with_options(result_storage=storage) if storage else final_imitation
                publish_final_report(ctx, total, final_step(ctx, total))
            evaluation = evaluate_run(config_path, config, run_id)  # on the servers started above
    else:
        evaluation = evaluate_run(config_path, config, run_id)
    if export_dataset or push_to_hub:
        export(config_path, run_id, push_to_hub=push_to_hub)
    summaries = [s for s in read_summaries(store) if s.iteration < total]
    final_info = read_final_info(final)
    scored = RunEvaluation(eval_id=evaluation.eval_id, scores=run_scores(evaluation.scores, run_id)) if evaluation else None
    if summaries:
        logger.info("run %s\n%s\n%s", run_id, summary_text_table(summaries, scored and scored.scores),
                    final_text(final, final_info))
    elif final_info:  # the one-shot baseline: no iteration, one fine-tune
        logger.info("run %s (one-shot)\n%s", run_id, final_text(final, final_info))
    return RunResult(run_id=run_id, run_uri=opened.run_uri, iterations=summaries, final_checkpoint=final,
                     final=final_info, evaluation=scored)


def evaluate_run(config_path: str, config: RunConfig, run_id: str) -> EvaluationResult | None:
    """`evaluation.after_run`: the base student, every checkpoint and the final one against the reference
    on the eval set (the `lion-evaluate` flow, as a sub-flow), so the run ends with its effect measured."""
    if not config.evaluation.after_run:
        return None
    return evaluate(config_path, [f"run:{run_id}"], name=f"{run_id}-eval")
