"""`lion report`: a run as one self-contained HTML file (lion_core.report_html), without Prefect."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lion_core.config import load_config


def report(
    run_id: Annotated[str, typer.Argument(help="The run id.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The HTML file to write (replaced if it exists).")],
    config: Annotated[Path | None, typer.Option("--config", "-c", help="Take the runs root and the evaluations "
                      "root from this config.")] = None,
    runs_root: Annotated[str | None, typer.Option("--runs-root", help="Runs root folder or URI (default: runs).")] = None,
) -> None:
    """One HTML page with the run's iterations, its evaluation scores, its final checkpoint and every chart,
    embedded: it loads nothing else, so it can be mailed or archived as it is."""
    from lion_core.files import write_bytes_atomic
    from lion_core.report_html import load_report, render_html
    from lion_core.store import RunStore

    if config is not None and runs_root is not None:
        raise typer.BadParameter("give --config or --runs-root, not both")
    if out.is_dir():
        raise typer.BadParameter(f"{out} is a folder; name the HTML file to write", param_hint="--out")
    cfg = load_config(config) if config else None
    root = cfg.storage.runs_root if cfg else runs_root or "runs"
    # read everything first: a run that is missing or unreadable leaves no file behind
    page = render_html(load_report(RunStore(root, run_id), cfg.evaluation.root(root) if cfg else None))
    # temp file beside it, then a rename: a reader never sees half a report, and a failed write keeps the old one
    write_bytes_atomic(str(out.resolve()), page.encode("utf-8"))
    typer.echo(f"report of run {run_id} -> {out} ({len(page) / 1024:.0f} KiB)")
