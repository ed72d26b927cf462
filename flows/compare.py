"""`lion-compare`: several runs' final students on one yardstick, and whether the loop paid for itself."""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path

import pyarrow.parquet as pq
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from flows.evaluate import evaluate
from lion_core.compare import (
    api_requests,
    check_comparable,
    compare_markdown,
    compare_pairs,
    judged_rows,
    training_seconds,
)
from lion_core.config import load_config, parse_config
from lion_core.evaluation import resolve_checkpoints
from lion_core.files import read_bytes
from lion_core.llm import ResponseStore
from lion_core.plots import compared_runs
from lion_core.report import read_final_report, read_summaries
from lion_core.results import CompareResult
from lion_core.store import RunStore, resolve_uri, validate_run_id
from lion_prefect.secrets import export_store_password


def compare_run_name() -> str:
    return f"lion-compare-{flow_run.parameters.get('name') or f'compare-{flow_run.id}'}"


@flow(name="lion-compare", log_prints=True, flow_run_name=compare_run_name)
def compare(config_path: str, run_ids: list[str], eval_set: str | None = None, name: str | None = None) -> CompareResult:
    """The final checkpoints of `run_ids` judged on the same questions, against the same reference answers,
    by the same judge (the config's `evaluation`), in both orders; per pair of runs the paired difference
    of relative scores with its 95% bootstrap interval; each run's API calls, cost and training time.

    Args:
        config_path: A run config whose `storage` finds the runs and whose `evaluation` is the yardstick;
            every run must have been made with the same evaluation settings.
        run_ids: Two or more finished runs.
        eval_set: The questions; empty: the config's `evaluation.eval_set`.
        name: The comparison's id (its evaluation folder); repeating one reuses what it has.
    """
    logger = get_run_logger()
    config = load_config(config_path)
    export_store_password(config.storage)
    runs = list(dict.fromkeys(validate_run_id(r) for r in run_ids))
    infos = {r: RunStore(config.storage.runs_root, r).read_run_info() for r in runs}
    check_comparable({"--config": config.to_json_dict(), **{r: info["config"] for r, info in infos.items()}})
    # each run's final student under the label the evaluation gives it (two that would share one are refused)
    labels = {r: label for r in runs for label, _ in resolve_checkpoints(config, [f"final:{r}"])}
    resolve_checkpoints(config, [f"final:{r}" for r in runs])
    eval_id = validate_run_id(name) if name else f"compare-{flow_run.id}"
    # answers and verdicts already in the response store (a run's own evaluation, an earlier comparison) are
    # read back, not paid again
    result = evaluate(config_path=config_path, checkpoints=[f"final:{r}" for r in runs], eval_set=eval_set, name=eval_id)
    root = config.evaluation.root(config.storage.runs_root)
    results = pq.read_table(io.BytesIO(read_bytes(resolve_uri(result.files["results"], root)))).to_pylist()
    rows = {r: judged_rows(results, labels[r]) for r in runs}
    pairs = compare_pairs(rows)
    spent, calls = {}, {}
    for r in runs:  # what each run paid is in its own store (runs compared may each have had one)
        with ResponseStore.open(parse_config(infos[r]["config"]).storage) as store:
            spent[r], calls[r] = store.spent(r), store.paid_calls(r)
    requests = {r: api_requests(read_summaries(RunStore(config.storage.runs_root, r)), read_final_report(
        RunStore(config.storage.runs_root, r))) for r in runs}
    summary = []
    for r in runs:
        scores = result.scores.get(labels[r], {})
        summary.append({"run": r, "selection": infos[r]["config"].get("loop", {}).get("selection", "adversarial"),
                        "relative_score": scores.get("relative_score"),
                        "relative_score_ci95": scores.get("relative_score_ci95"),
                        "api_requests": sum(requests[r].values()), "api_requests_by_role": requests[r],
                        "paid_calls": sum(calls[r].values()), "cost_usd": sum(spent[r].values()),
                        "training_s": training_seconds(str(Path(config.storage.checkpoint_dir(r, 0)).parent))})
    table = compare_markdown(summary, pairs)
    chart = compared_runs(summary)
    create_markdown_artifact(key=re.sub(r"[^a-z0-9-]", "-", f"compare-{eval_id}".lower())[:60],
                             description=f"lion compare {eval_id}",
                             markdown=f"# Runs compared ({eval_id})\n\n{table}\n\n"
                                      f"![runs](data:image/png;base64,{base64.b64encode(chart).decode()})\n")
    logger.info("compared %s:\n%s", ", ".join(runs), table)
    return CompareResult(eval_id=eval_id, uri=result.uri, runs=summary, pairs=pairs)
