"""`lion run --preview N`: the first N seeds through every stage, as a run of its own against the real
endpoints, shown side by side (prompts sent, raw replies, verdicts, new instructions), then the full
run's plan with the assumptions the preview measured (lion_core.preview, lion_core.planning)."""

from __future__ import annotations

from pathlib import Path

import typer

from lion_cli.plan import eval_questions, print_plan
from lion_cli.supervision import PROCESS_TAG
from lion_core.config import RunConfig
from lion_core.errors import LionError


def preview_run(config_path: Path, cfg: RunConfig, n: int, run_id: str | None, seed: str | None) -> None:
    """Run the preview and print it. `cfg` is the user's config as loaded; `seed` overrides its seeds."""
    from lion_core.llm.responses import ResponseStore
    from lion_core.planning import make_plan
    from lion_core.preflight import preflight_problems
    from lion_core.preview import gather, observed_assumptions, preview_config, seeds_jsonl
    from lion_core.preview_text import report_text
    from lion_core.seeds import load_seeds
    from lion_core.store import RunStore, new_run_id, validate_run_id

    source = seed or cfg.data.seed
    if not source:
        raise LionError("no seed data to preview: set data.seed in the config, or pass --seed")
    rid = validate_run_id(run_id or f"preview-{new_run_id()}")
    if RunStore(cfg.storage.runs_root, rid).exists():
        raise LionError(f"run {rid!r} already exists under {cfg.storage.runs_root}; a preview is a new run: "
                        "give another --run-id")
    seeds = load_seeds(source).rows
    # In the run's local folder (beside a SQLite store): the flow reads its config from a local file, and the
    # run records both files, so the preview can be resumed or inspected later like any run.
    folder = Path(cfg.storage.local_folder()) / "previews" / rid
    folder.mkdir(parents=True, exist_ok=True)
    seed_file, derived_path = folder / "seeds.jsonl", folder / "config.yaml"
    seed_file.write_text(seeds_jsonl(seeds[:n]), encoding="utf-8")
    derived = preview_config(cfg, min(n, len(seeds)), str(seed_file))
    _write_config(derived, derived_path)
    if problems := preflight_problems(derived, new_run=True):
        raise LionError(f"the preview cannot start; {len(problems)} problem(s):\n" + "\n".join(f"  - {p}" for p in problems))

    typer.echo(f"preview {rid}: the first {min(n, len(seeds))} of {len(seeds)} seeds of {source}, one iteration "
               f"(imitation, discrimination, generation, the final imitation), paid at the configured endpoints")
    typer.echo(f"  its config: {derived_path}")
    result = _run_flow(derived_path, rid, str(seed_file))

    with ResponseStore.open(derived.storage) as responses:
        report = gather(RunStore(derived.storage.runs_root, rid, derived), derived, responses)
    typer.echo(f"\n{report_text(report)}")

    observed = observed_assumptions(report, cfg)
    full = cfg if seed is None else cfg.model_copy(update={"data": cfg.data.model_copy(update={"seed": seed})})
    plan = make_plan(full, seeds, observed.assumptions, eval_questions(full))
    typer.echo(f"\nprojected for the full run: {config_path}, {plan.seeds} seeds, {plan.iterations} iterations")
    print_plan(plan)
    typer.echo("from the preview (completion tokens as its endpoints counted them): " + "; ".join(observed.notes))
    typer.echo(f"\npreview run {rid} at {result.run_uri} (lion pools show {rid} --config {derived_path})")


def _write_config(config: RunConfig, path: Path) -> None:
    import yaml

    from lion_core.config import load_config

    path.write_text(yaml.safe_dump(config.to_json_dict(), sort_keys=False, allow_unicode=True), encoding="utf-8")
    if load_config(path) != config:  # the flow reads this file: it must mean what was checked
        raise LionError(f"{path}: the preview's config does not read back as written")


def _run_flow(config_path: Path, run_id: str, seed: str):
    from lion_prefect.local_api import prefect_setup

    prefect_setup()
    from prefect import tags

    from flows.lion import lion

    with tags(PROCESS_TAG):
        return lion(config_path=str(config_path), run_id=run_id, iterations=1, seed=seed)
