"""`lion compare`: several finished runs' final students on one yardstick (the `lion-compare` flow)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from lion_cli.options import ConfigOpt
from lion_cli.supervision import PROCESS_TAG
from lion_core.config import load_config
from lion_core.errors import LionError


def compare(
    runs: Annotated[list[str], typer.Argument(help="Two or more finished runs (their ids).")],
    config: ConfigOpt,
    eval_set: Annotated[str | None, typer.Option("--eval-set", "-e", help="Questions; default: evaluation.eval_set")] = None,
    name: Annotated[str | None, typer.Option("--name", help="The comparison's id; repeating one reuses it.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the comparison as one JSON object.")] = False,
) -> None:
    """Judge the runs' final checkpoints on the same questions by the same judge, in both orders: each run's
    relative score, API calls, cost and training time, and every pair's paired difference with its 95%
    interval. Answers and verdicts already in the response store are reused, not paid again; runs made with
    other evaluation settings are refused."""
    from lion_core.compare import compare_markdown
    from lion_core.evaluation import resolve_checkpoints
    from lion_core.store import RunStore, new_run_id

    cfg = load_config(config)
    if len(set(runs)) < 2:
        raise LionError("lion compare needs at least two different runs")
    for r in runs:  # fail before starting anything: every run exists and has its final student
        RunStore(cfg.storage.runs_root, r).read_run_info()
    resolve_checkpoints(cfg, [f"final:{r}" for r in runs])
    from lion_prefect.local_api import prefect_setup

    prefect_setup()
    from prefect import tags

    from flows.compare import compare as compare_flow

    with tags(PROCESS_TAG):
        result = compare_flow(config_path=str(config), run_ids=runs, eval_set=eval_set,
                              name=name or f"compare-{new_run_id()}")
    if as_json:
        typer.echo(json.dumps(result.model_dump(mode="json")))
    else:
        typer.echo(compare_markdown(result.runs, result.pairs))
        typer.echo(f"\nevaluation: {result.uri}")
