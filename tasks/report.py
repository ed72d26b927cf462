"""What the Prefect UI shows for an iteration: markdown and table artifacts, linked PNG charts."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact

from lion_core import report
from lion_core.plots import write_iteration_plots
from tasks.common import RunContext


def _key(*parts: Any) -> str:
    """Artifact keys allow lower-case letters, digits and dashes only."""
    raw = "-".join(str(p) for p in parts).lower()
    return "".join(c if c.isalnum() else "-" for c in raw).strip("-")


@task(name="publish-iteration", tags=["lion", "report"], retries=1)
def publish_iteration(ctx: RunContext, k: int, summary: dict[str, Any]) -> dict[str, Any]:
    """Draw the charts, save them with the run, and publish the iteration's report artifacts."""
    plots = write_iteration_plots(ctx.store(), k, ctx.config.loop.tau)
    summary = {**summary, "plots": plots}
    report.write_summary(ctx.store(), k, summary)
    key = _key("lion", ctx.run_id, "iter", k)
    create_markdown_artifact(report.summary_markdown(summary), key=key,
                             description=f"Lion run {ctx.run_id}, iteration {k}")
    create_table_artifact([report.summary_row(summary)], key=f"{key}-table",
                          description=f"Lion run {ctx.run_id}, iteration {k}: key figures")
    create_table_artifact(summary["usage"] or [{"role": "-", "stage": "-"}], key=f"{key}-usage",
                          description="API requests, tokens and cost per role and stage")
    for name, uri in plots.items():
        create_link_artifact(_file_link(uri), link_text=f"{name}.png", key=_key(key, name),
                             description=f"iteration {k}: {name.replace('_', ' ')} chart")
    return summary


def _file_link(uri: str) -> str:
    return uri if "://" in uri else f"file://{uri}"
