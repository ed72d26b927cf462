"""`lion limits apply`: the Prefect concurrency limits that share each API key's budget."""

from __future__ import annotations

import typer

from lion_cli.options import ConfigOpt
from lion_core.config import load_config


def limits_apply(config: ConfigOpt) -> None:
    """Create or update one global concurrency limit per API key of the config, and the `gpu` tag's limit
    (`orchestration.gpu_slots` fine-tunes and student-inference tasks at once on this Prefect server)."""
    from lion_prefect.local_api import prefect_setup

    prefect_setup()
    from lion_prefect.limits import apply_gpu_limit, apply_limits

    cfg = load_config(config)
    for row in apply_limits(cfg):
        typer.echo(f"{row['name']}: {row['slots']} shard slot(s) for {', '.join(row['roles'])} ({row['action']})")
    gpu = apply_gpu_limit(cfg)
    typer.echo(f"{gpu['name']}: {gpu['slots']} task(s) tagged {gpu['tag']!r} at once: fine-tunes and student "
               f"answers, across every run on this server ({gpu['action']})")
