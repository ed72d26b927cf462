"""`lion plan`: what a run will ask the API for and cost, before any paid request (no Prefect, no call)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from lion_core.config import RunConfig, load_config
from lion_core.errors import LionError

if TYPE_CHECKING:  # the planner is imported by the command itself: `lion --help` stays fast
    from lion_core.planning import Plan


def plan(
    file: Annotated[Path, typer.Argument(help="Run config (YAML).")],
    resume: Annotated[str | None, typer.Option("--resume", help="Plan only what this existing run has left.")] = None,
    acceptance: Annotated[float, typer.Option(help="Share of generator draws kept (assumed).")] = 0.5,
    reask_rate: Annotated[float, typer.Option(help="Referee re-asks per verdict (assumed).")] = 0.02,
    referee_reply_tokens: Annotated[int, typer.Option(help="Tokens of a referee reply (assumed).")] = 150,
    teacher_reply_tokens: Annotated[int | None, typer.Option(
        help="Tokens of a teacher answer (assumed); default: the seeds' own answers, else half of max_tokens.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan as one JSON object.")] = False,
) -> None:
    """Project a run's requests, tokens, dollars (interactive and batch prices) and hours at the configured
    limits, per iteration, stage and role, from the seeds' own text. For --resume, only what the run's
    files and response store do not hold yet."""
    from pydantic import ValidationError

    from lion_core.llm.responses import ResponseStore
    from lion_core.planning import Assumptions, make_plan, remaining_work
    from lion_core.seeds import load_seeds
    from lion_core.store import RunStore

    cfg = load_config(file)
    from lion_prefect.secrets import export_store_password

    export_store_password(cfg.storage)
    try:
        assumptions = Assumptions(acceptance=acceptance, reask_rate=reask_rate, referee_reply_tokens=referee_reply_tokens,
                                  teacher_reply_tokens=teacher_reply_tokens)
    except ValidationError as err:
        raise LionError(f"lion plan: {err.errors()[0]['loc'][0]}: {err.errors()[0]['msg']}") from None
    questions = eval_questions(cfg)
    remaining = None
    if resume:
        store = RunStore(cfg.storage.runs_root, resume, cfg)
        if not store.exists():
            raise LionError(f"no run {resume!r} under {cfg.storage.runs_root} to plan a resume of")
        seeds = store.read_pool(store.ref(0, "cache_pool")).to_dict("records")
        with ResponseStore.open(cfg.storage) as responses:
            remaining = remaining_work(store, cfg, responses, assumptions)
    else:
        seeds = load_seeds(cfg.data.seed).rows
    result = make_plan(cfg, seeds, assumptions, questions, remaining, resumed_from=resume)
    if as_json:
        typer.echo(json.dumps({**result.model_dump(), "by_role": result.by("role"), "by_stage": result.by("stage"),
                               "by_iteration": result.by("iteration")}))
        return
    typer.echo(f"{file}: {result.seeds} seeds, {result.iterations} iterations"
               + (f", resuming {resume} (what its files and response store already hold is left out)" if resume else ""))
    print_plan(result)


def eval_questions(cfg: RunConfig) -> int:
    """Questions the evaluation after the run asks about (0 when there is none)."""
    from lion_core.evaluation import load_eval_set

    return len(load_eval_set(cfg.evaluation.eval_set)) if cfg.evaluation.after_run and cfg.evaluation.eval_set else 0


def print_plan(result: Plan) -> None:
    """The plan's rows, totals, per-role figures and the assumptions it rests on (`lion plan`, `lion run --preview`)."""
    typer.echo(f"{'iteration':>10} {'stage':<15} {'role':<10} {'requests':>9} {'prompt tok':>11} {'compl tok':>10} "
               f"{'$':>10} {'batch $':>10} {'hours':>7}")
    for r in result.rows:
        typer.echo(f"{r.iteration:>10} {r.stage:<15} {r.role:<10} {r.requests:>9} {r.prompt_tokens:>11} "
                   f"{r.completion_tokens:>10} {r.cost_usd:>10.2f} {r.batch_cost_usd:>10.2f} {r.minutes / 60:>7.2f}")
    typer.echo(f"{'total':>10} {'':<15} {'':<10} {result.requests:>9} {'':>11} {'':>10} {result.cost_usd:>10.2f} "
               f"{result.batch_cost_usd:>10.2f} {result.hours:>7.2f}")
    for role, t in result.by("role").items():
        typer.echo(f"  {role:<10} {int(t['requests']):>9} requests  ${t['cost_usd']:.2f} (batch ${t['batch_cost_usd']:.2f})")
    a = result.assumptions
    typer.echo(f"tokens: {result.token_counting}; assumed: {a.acceptance:.0%} of generator draws kept, "
               f"{a.reask_rate:.0%} referee re-asks, {a.referee_reply_tokens}-token referee replies; hours at each "
               "role's requests and tokens per minute (0 in batch mode)")
