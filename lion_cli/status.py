"""`lion status RUN`: where a run stands, from its files and its response store; no Prefect server needed."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from lion_core.config import load_config
from lion_core.database import is_postgres
from lion_core.errors import LionError
from lion_core.llm.responses import ResponseStore
from lion_core.runs import recorded_config, run_holder
from lion_core.status import run_status, status_json, status_text, with_spend
from lion_core.store import RunStore, validate_run_id
from lion_prefect.secrets import export_store_password


def status(
    run_id: Annotated[str, typer.Argument(help="The run id.")],
    config: Annotated[Path | None, typer.Option("--config", "-c", help="Take the runs root from this config.")] = None,
    runs_root: Annotated[str | None, typer.Option("--runs-root", help="Runs root folder or URI (default: runs).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Iteration and stage, items done per stage, time per stage and an estimate of what is left, spend per
    role, failures by reason, the latest checkpoint. Reads the run's files and response store only: it works
    while the run goes on, from another terminal, without a Prefect server."""
    if config is not None and runs_root is not None:
        raise typer.BadParameter("give --config or --runs-root, not both")
    root = runs_root or (load_config(config).storage.runs_root if config else "runs")
    store = RunStore(root, validate_run_id(run_id))
    if not store.exists():
        raise LionError(f"no run {run_id!r} under {root}: give the runs root it lives in (--config or --runs-root)")
    cfg = recorded_config(store)  # the run's own settings: its store, checkpoints, stages
    export_store_password(cfg.storage)  # storage.password_secret: read from its Prefect Secret block
    responses, error = None, None
    location = cfg.storage.response_store_path()
    try:
        if not is_postgres(location) and not os.path.exists(location):
            raise LionError(f"{location} does not exist here")  # never create an empty store by looking
        responses = ResponseStore.open(cfg.storage)
    except Exception as err:  # noqa: BLE001 - the run's files still say where it is; the spend is marked unknown
        error = f"{type(err).__name__}: {err}"
    try:
        try:
            holder = run_holder(cfg, store.run_id)
        except Exception as err:  # noqa: BLE001 - the store's server is out of reach: the files still tell
            holder, error = None, error or f"{type(err).__name__}: {err}"
        result = with_spend(run_status(store, cfg, responses, holder=holder), responses, error)
    finally:
        if responses is not None:
            responses.close()
    typer.echo(json.dumps(status_json(result), indent=2) if as_json else status_text(result))
