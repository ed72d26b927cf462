"""What the Prefect UI shows for an iteration: markdown and table artifacts, linked PNG charts."""

from __future__ import annotations

import json
from typing import Any

from prefect import task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact

from lion_core import report
from lion_core.files import join_uri, read_bytes, write_bytes_atomic
from lion_core.plots import write_iteration_plots
from lion_core.report import artifact_key, file_link
from lion_core.results import FinalResult, IterationSummary
from lion_core.runs import read_resumes
from tasks.common import RunContext


@task(name="publish-iteration", tags=["lion", "report"], task_run_name="iter-{k}-report", retries=1)
def publish_iteration(ctx: RunContext, k: int, summary: IterationSummary) -> IterationSummary:
    """Draw the charts, save them with the run, and publish the iteration's report artifacts."""
    plots = write_iteration_plots(ctx.store(), k, ctx.config.loop.tau)
    summary = summary.model_copy(update={"plots": plots})
    report.write_summary(ctx.store(), k, summary)
    key = artifact_key("lion", ctx.run_id, "iter", k)
    charts = {name: read_bytes(uri) for name, uri in plots.items()}
    create_markdown_artifact(report.summary_markdown(summary) + "\n\n" + report.charts_markdown(charts), key=key,
                             description=f"Lion run {ctx.run_id}, iteration {k}")
    create_table_artifact([report.summary_row(summary)], key=f"{key}-table",
                          description=f"Lion run {ctx.run_id}, iteration {k}: key figures")
    create_table_artifact([r.model_dump() for r in summary.usage] or [{"role": "-", "stage": "-"}], key=f"{key}-usage",
                          description="API requests, tokens and cost per role and stage")
    for name, uri in plots.items():
        create_link_artifact(file_link(uri), link_text=f"{name}.png", key=artifact_key(key, name),
                             description=f"iteration {k}: {name.replace('_', ' ')} chart")
    return summary


@task(name="publish-final", tags=["lion", "report"], task_run_name="final-report", retries=1)
def publish_final_report(ctx: RunContext, n: int, final: FinalResult) -> dict[str, Any]:
    """The final checkpoint's report: kept with the run (`final.json`) and shown in the UI."""
    info = {**report.final_info(n, final), "selection": ctx.config.loop.selection}
    write_bytes_atomic(join_uri(ctx.store().run_uri, report.FINAL_REPORT), json.dumps(info, indent=2, default=str).encode())
    create_markdown_artifact(report.final_markdown(ctx.run_id, final.final_checkpoint, info, final.imitation.usage,
                                                   read_resumes(ctx.store())),
                             key=artifact_key("lion", ctx.run_id, "final"),
                             description=f"Lion run {ctx.run_id}: final checkpoint")
    return info
