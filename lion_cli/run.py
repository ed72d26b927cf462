"""The commands that run a Prefect flow: `lion run` and `lion evaluate`. Prefect is imported only once
the request has been checked (the API then exists: lion_prefect.local_api)."""

from __future__ import annotations

from typing import Annotated

import typer

from lion_cli.options import ConfigOpt
from lion_cli.supervision import PROCESS_TAG
from lion_core.config import RunConfig, load_config
from lion_core.errors import LionError
from lion_core.results import RunResult


def run(
    config: ConfigOpt,
    run_id: Annotated[str | None, typer.Option("--run-id", help="Name of a new run; default: a timestamp.")] = None,
    resume: Annotated[str | None, typer.Option("--resume", help="Continue this existing run.")] = None,
    iterations: Annotated[int | None, typer.Option("--iterations", "-n", min=1, help="Default: loop.iterations.")] = None,
    seed: Annotated[str | None, typer.Option("--seed", "-s", help="Seed file/URI for a new run; default: data.seed")] = None,
    retry_failed: Annotated[bool, typer.Option("--retry-failed", help="With --resume: send again the requests given up "
                            "for good (their budget of unusable replies spent), with as many more tries.")] = False,
    preview: Annotated[int | None, typer.Option("--preview", min=1, help="Only the first N seeds, one iteration, as a "
                       "run of its own (paid): prints prompts, replies, verdicts, new instructions and the full run's "
                       "projected cost.")] = None,
) -> None:
    """Run the Lion loop as a Prefect flow (a server if PREFECT_API_URL is set, else a local one)."""
    from lion_core.store import RunStore, new_run_id

    cfg = load_config(config)
    if preview is not None:
        if resume or iterations:
            raise LionError("--preview starts a run of its own with one iteration: it takes neither --resume nor --iterations")
        from lion_cli.preview import preview_run

        return preview_run(config, cfg, preview, run_id, seed)
    if resume and run_id:
        raise typer.BadParameter("give --run-id for a new run or --resume for an existing one, not both")
    if retry_failed and not resume:
        raise typer.BadParameter("--retry-failed goes with --resume RUN: a new run has no failed requests")
    rid = resume or run_id or new_run_id()
    exists = RunStore(cfg.storage.runs_root, rid).exists()
    if resume and not exists:
        raise LionError(f"no run {rid!r} under {cfg.storage.runs_root} to resume")
    if not resume and exists:
        raise LionError(f"run {rid!r} already exists under {cfg.storage.runs_root}; continue it with --resume {rid}")
    _preflight(cfg if seed is None else cfg.model_copy(update={"data": cfg.data.model_copy(update={"seed": seed})}),
               new_run=not exists)
    from lion_prefect.local_api import prefect_setup

    prefect_setup()
    from prefect import tags

    from flows.lion import lion

    with tags(PROCESS_TAG):
        result = lion(config_path=str(config), run_id=rid, iterations=iterations, seed=seed, retry_failed=retry_failed)
    _print_result(result, cfg)


def _preflight(cfg, new_run: bool) -> None:
    """Fail before starting anything, with every problem at once (lion_core.preflight)."""
    from lion_core.preflight import preflight_problems
    from lion_prefect.secrets import export_store_password

    export_store_password(cfg.storage)
    if problems := preflight_problems(cfg, new_run=new_run):
        raise LionError(f"the run cannot start; {len(problems)} problem(s):\n" + "\n".join(f"  - {p}" for p in problems))


def _print_result(result: RunResult, cfg: RunConfig) -> None:
    from lion_core.checkpoints import final_text
    from lion_core.report import summary_text_table
    from lion_core.store import resolve_uri

    typer.echo(f"\nrun {result.run_id}: {len(result.iterations)} iteration(s) at {result.run_uri}")
    evaluation = result.evaluation
    if result.iterations:
        typer.echo(summary_text_table(result.iterations, evaluation.scores if evaluation else None))
        if evaluation:
            typer.echo(f"  rel. score: student / teacher score sums on {cfg.evaluation.eval_set}, judged in both orders "
                       f"by the referee ({cfg.referee.model}); evaluation {evaluation.eval_id}")
        last = result.iterations[-1]
        typer.echo(f"\n  {final_text(result.final_checkpoint, result.final)}")
        typer.echo(f"  pools:       {result.run_uri}/iter-*/  (lion pools show {result.run_id} --config ...)")
        last_checkpoint = resolve_uri(last.checkpoint or "", cfg.storage.runs_root)
        typer.echo(f"  checkpoints: {last_checkpoint} (last iteration), {result.final_checkpoint} (final)")
        typer.echo(f"  plots:       {', '.join(sorted(last.plots.values()))}")
        typer.echo(f"  responses:   {cfg.storage.response_store_path()}")
    elif result.final is not None:  # the one-shot baseline: no iteration, one fine-tune
        if evaluation:
            typer.echo("  " + "   ".join(f"{name}: {s['relative_score']:.1%}" for name, s in evaluation.scores.items()
                                         if s.get("relative_score") is not None)
                       + f"   (relative score; evaluation {evaluation.eval_id})")
        typer.echo(f"\n  {final_text(result.final_checkpoint, result.final)}")
        typer.echo(f"  responses:   {cfg.storage.response_store_path()}")


def evaluate(
    config: ConfigOpt,
    checkpoints: Annotated[list[str], typer.Option("--checkpoints", "-k", help="A model folder, `base`, or "
                           "`run:<run id>` (the base model, every trained iteration and the final checkpoint); "
                           "repeat or separate with commas.")],
    eval_set: Annotated[str | None, typer.Option("--eval-set", "-e", help="Questions (JSONL, JSON or Parquet); "
                        "default: evaluation.eval_set")] = None,
    name: Annotated[str | None, typer.Option("--name", help="Evaluation id; repeating one resumes it.")] = None,
) -> None:
    """Judge checkpoints against the reference model, in both orders: relative score per category."""
    from lion_core.evaluation import resolve_checkpoints

    specs = [s.strip() for item in checkpoints for s in item.split(",") if s.strip()]
    cfg = load_config(config)
    resolve_checkpoints(cfg, specs)  # fail before starting anything
    if not (eval_set or cfg.evaluation.eval_set):
        raise LionError("no eval set: pass --eval-set or set evaluation.eval_set in the config")
    from lion_prefect.local_api import prefect_setup

    prefect_setup()
    from prefect import tags

    from flows.evaluate import evaluate as evaluate_flow
    from lion_core.evaluation import scores_markdown
    from lion_core.store import new_run_id, resolve_uri

    with tags(PROCESS_TAG):
        result = evaluate_flow(config_path=str(config), checkpoints=specs, eval_set=eval_set,
                               name=name or f"eval-{new_run_id()}")
    typer.echo(scores_markdown(f"evaluation {result.eval_id}", result.scores,
                               cfg.evaluation.reference.model, (cfg.evaluation.judge or cfg.referee).model))
    root = cfg.evaluation.root(cfg.storage.runs_root)
    typer.echo(f"\nresults: {resolve_uri(result.files['results'], root)}\nscores:  {resolve_uri(result.files['scores'], root)}")
    typer.echo("charts:  " + ", ".join(result.plots.values()))
