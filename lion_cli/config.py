"""`lion config check` and `lion config explain`: run configs, checked and explained, without Prefect."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lion_core.config import load_config
from lion_core.errors import LionError


def config_check(
    file: Annotated[Path, typer.Argument(help="Run config (YAML).")],
    probe: Annotated[bool, typer.Option("--probe/--no-probe", help="Ask each API endpoint for its models (free).")] = True,
) -> None:
    """Validate a run config, check every file, key and endpoint it names, and print its hash."""
    from lion_core.preflight import preflight_problems, store_notes
    from lion_core.seeds import load_seeds
    from lion_prefect.secrets import export_store_password

    cfg = load_config(file)
    export_store_password(cfg.storage)
    problems = preflight_problems(cfg, new_run=True, probe=probe)
    seeds = None
    if cfg.data.seed and not problems:  # read as a new run reads them (a hub dataset is fetched into its cache)
        try:
            seeds = load_seeds(cfg.data.seed)
        except LionError as err:
            problems.append(f"data.seed: {err}")
    if problems:
        raise LionError(f"{file}: {len(problems)} problem(s):\n" + "\n".join(f"  - {p}" for p in problems))
    typer.echo(f"{file}: ok  (config hash {cfg.config_hash()[:16]})")
    if cfg.storage.shared_store:
        typer.echo(f"  store     {cfg.storage.response_store} (PostgreSQL, password from "
                   f"{'$' + cfg.storage.password_env if cfg.storage.password_env else 'nowhere: none needed'})")
    for note in store_notes(cfg):
        typer.echo(f"  warning   {note}")
    for role in ("teacher", "referee", "generator"):
        r = getattr(cfg, role)
        key = f"key from ${r.api_key_env}" if r.api_key_env else "no key"
        typer.echo(f"  {role:<9} {r.model} @ {r.base_url}  ({key})")
    if seeds is not None:
        typer.echo(f"  seeds     {len(seeds.rows)} instructions from {seeds.source.uri}")
    typer.echo(f"  student   {cfg.student.model}  ({cfg.student.prompt_format} prompts)")
    t = cfg.training
    adapters = f", rank {t.lora.rank} adapters on {t.lora.target_modules}" if t.method != "full" else ""
    typer.echo(f"  training  {t.method}{adapters}, {t.launcher} on {t.world_size} process(es), "
               f"DeepSpeed {Path(t.deepspeed_config).name if t.deepspeed_config else 'off'}")
    typer.echo(f"  loop      {cfg.loop.iterations} iterations, {cfg.loop.new_instructions_per_iteration} new per iteration, "
               f"tau {cfg.loop.tau}, ROUGE-L <= {cfg.loop.rouge_l_threshold}")
    typer.echo(f"  runs root {cfg.storage.runs_root}")


def config_explain(
    field: Annotated[str | None, typer.Argument(help="A section or field, e.g. teacher.rate_limits or "
                                                        "loop.tau; default: every field.")] = None,
) -> None:
    """Print each config field's type, default and meaning: every field, or those under FIELD."""
    from lion_core.config.explain import explain

    typer.echo(explain(field))
