"""The commands on runs and files in the store, without Prefect: `lion init`, `lion pools show` and
`lion dedup`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from lion_cli.options import ConfigOpt
from lion_core.config import load_config
from lion_core.errors import LionError


def init(
    config: ConfigOpt,
    seed: Annotated[str | None, typer.Option("--seed", "-s", help="Seed file/URI or hf:<org>/<name>; default: data.seed")] = None,
    run_id: Annotated[str | None, typer.Option("--run-id", help="Name of the run; default: a timestamp.")] = None,
) -> None:
    """Create iteration 0 of a run: Train Pool = Cache Pool = the seed set."""
    from lion_core.runs import init_run
    from lion_core.store import resolve_uri

    cfg = load_config(config)
    result = init_run(cfg, seed_source=seed, run_id=run_id)
    typer.echo(f"run {result.run_id} created at {result.run_uri}")
    typer.echo(f"  seed:        {result.seed_uri}")
    typer.echo(f"  read:        {result.records_read} records, {result.duplicates_dropped} exact duplicates dropped")
    for name, ref in (("train_pool", result.train_pool), ("cache_pool", result.cache_pool)):
        typer.echo(f"  {name}:  {ref.rows} rows  sha256 {ref.sha256[:16]}  {resolve_uri(ref.uri, cfg.storage.runs_root)}")


def pools_show(
    run_id: Annotated[str, typer.Argument(help="The run id.")],
    config: Annotated[Path | None, typer.Option("--config", "-c", help="Take the runs root from this config.")] = None,
    runs_root: Annotated[str | None, typer.Option("--runs-root", help="Runs root folder or URI (default: runs).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Pool sizes and origins per iteration, lineage, and hash verification of every file."""
    from lion_core.runs import describe_run

    if config is not None and runs_root is not None:
        raise typer.BadParameter("give --config or --runs-root, not both")
    root = runs_root or (load_config(config).storage.runs_root if config else "runs")
    desc = describe_run(root, run_id)
    bad = [f for it in desc["iterations"] for f in it["files"] if not f["verified"]]
    if as_json:
        typer.echo(json.dumps(desc, indent=2))
    else:
        _print_run(desc)
    if bad:
        raise LionError(f"{len(bad)} file(s) failed verification: " + "; ".join(f["error"] for f in bad))


def _print_run(desc: dict) -> None:
    typer.echo(f"run {desc['run_id']}  ({desc['run_uri']})")
    typer.echo(f"  created {desc['created_at']}  config {str(desc['config_hash'])[:12]}  code {desc['code_version']}")
    if desc.get("seed"):
        s = desc["seed"]
        typer.echo(f"  seed {s['uri']}: {s['records_read']} records, {s['duplicates_dropped']} duplicates dropped")
    for it in desc["iterations"]:
        typer.echo(f"iteration {it['iteration']}  (updated {it['updated_at']})")
        for f in it["files"]:
            status = "ok" if f["verified"] else "FAILED"
            origins = ", ".join(f"{k}={v}" for k, v in f.get("origins", {}).items())
            typer.echo(f"  {f['name']:<16} {f['rows']:>8} rows  sha256 {f['sha256'][:16]}  [{status}]"
                       + (f"  origins: {origins}" if origins else ""))
            for p in f["parents"]:
                typer.echo(f"  {'':<16} <- {p['uri']}" + (f"  sha256 {p['sha256'][:16]}" if p.get("sha256") else ""))


def dedup(
    against: Annotated[str, typer.Option("--against", help="Pool to compare with (any seed format).")],
    candidates: Annotated[str, typer.Option("--candidates", help="Candidate instructions (any seed format).")],
    out: Annotated[Path, typer.Option("--out", help="Output Parquet file.")],
    threshold: Annotated[float, typer.Option("--threshold", min=0.0, max=1.0, help="Reject when ROUGE-L F1 > this.")] = 0.7,
    tokenizer_name: Annotated[str, typer.Option("--tokenizer", help="rouge (rouge-score compatible) or unicode.")] = "rouge",
    force: Annotated[bool, typer.Option("--force", help="Overwrite --out if it exists.")] = False,
) -> None:
    """ROUGE-L novelty filter: mark each candidate accepted or not, with its best match."""
    import io

    import pyarrow.parquet as pq

    from lion_core.files import write_bytes_atomic
    from lion_core.generation.dedup import dedup as run_dedup
    from lion_core.generation.novelty import TOKENIZERS

    if tokenizer_name not in TOKENIZERS:
        raise typer.BadParameter(f"use one of {', '.join(TOKENIZERS)}", param_hint="--tokenizer")
    if out.exists() and not force:
        raise LionError(f"{out} exists; pass --force to overwrite it")
    table = run_dedup(against, candidates, threshold, tokenizer_name)
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    write_bytes_atomic(str(out.resolve()), buf.getvalue())
    kept = sum(table.column("accepted").to_pylist())
    typer.echo(f"{kept} of {table.num_rows} candidates accepted (ROUGE-L <= {threshold}, {tokenizer_name} tokens) -> {out}")
