"""The commands that write what a run made for use elsewhere: `lion export-model` and `lion export-dataset`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lion_core.config import load_config

RunConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="Locate the run with this config's storage "
                                                                          "settings; default: the run's own config.")]
RunsRootOpt = Annotated[str | None, typer.Option("--runs-root", help="Runs root folder or URI (default: runs).")]


def _run_store(run_id: str, config: Path | None, runs_root: str | None):
    """A finished or running run's store and config: `--config` (its storage settings locate the run),
    else the config the run recorded, found under `--runs-root` (default: runs)."""
    from lion_core.runs import recorded_config
    from lion_core.store import RunStore

    if config is not None and runs_root is not None:
        raise typer.BadParameter("give --config or --runs-root, not both")
    cfg = load_config(config) if config else None
    store = RunStore(cfg.storage.runs_root if cfg else runs_root or "runs", run_id, cfg)
    if cfg is None:  # the recorded config names the root the run was made under; the run may have moved since
        cfg = recorded_config(store)
        cfg = cfg.model_copy(update={"storage": cfg.storage.model_copy(update={"runs_root": store.runs_root})})
    return store, cfg


def export_model_command(
    run_id: Annotated[str, typer.Argument(help="The run id.")],
    out: Annotated[Path, typer.Option("--out", help="New folder to write the model to.")],
    merge: Annotated[bool, typer.Option("--merge/--no-merge", help="Fold a LoRA adapter into its base: a plain "
                                                                    "transformers model (vLLM loads it as it is).")] = False,
    iteration: Annotated[int | None, typer.Option("--iteration", min=0, help="Export this iteration's checkpoint "
                                                                              "instead of the final one.")] = None,
    config: RunConfigOpt = None,
    runs_root: RunsRootOpt = None,
) -> None:
    """Write the run's final student (or one iteration's) to a folder: a full model as it is, a LoRA
    adapter as it is or, with --merge, folded into its base."""
    from lion_core.model_export import export_model, model_source

    store, cfg = _run_store(run_id, config, runs_root)
    done = export_model(model_source(store, cfg, iteration), out, merge=merge, student=cfg.student)
    what = {"full": "full model", "adapter": f"LoRA adapter of {done.adapter_base}",
            "merged": f"merged model (adapter folded into {done.adapter_base})"}[done.kind]
    typer.echo(f"{done.out}: {what}, from {done.source}")
    if merge and done.kind == "full":
        typer.echo("  (a full fine-tune has no adapter to merge: copied as it is)")


def export_dataset_command(
    run_id: Annotated[str, typer.Argument(help="The run id.")],
    out: Annotated[Path, typer.Option("--out", help="Folder to write the dataset to (an earlier export of this "
                                                    "run there is replaced).")],
    push_to_hub: Annotated[str | None, typer.Option(
        "--push-to-hub", help="Also upload it as this Hugging Face dataset repo (user/name); token from HF_TOKEN.")] = None,
    private: Annotated[bool, typer.Option("--private/--public", help="Visibility of a repo the push creates.")] = True,
    license: Annotated[str, typer.Option("--license", help="Licence id for the card (the teacher's terms apply "
                                                           "to its answers).")] = "other",
    language: Annotated[list[str] | None, typer.Option("--language", help="Language code of the data (repeatable).")] = None,
    config: RunConfigOpt = None,
    runs_root: RunsRootOpt = None,
) -> None:
    """Write what the run distilled (instructions, teacher answers, origins, iterations, referee scores) as
    Parquet with a Hugging Face dataset card, and optionally push it to the Hub."""
    from lion_core.dataset_export import push_to_hub as push
    from lion_core.dataset_export import write_dataset

    store, cfg = _run_store(run_id, config, runs_root)
    done = write_dataset(store, cfg, out, license=license, languages=language or ["en"])
    origins = ", ".join(f"{k}={v}" for k, v in done.by_origin.items())
    typer.echo(f"{done.out}: {done.rows} instructions ({origins}), {done.answered} with a teacher answer")
    typer.echo(f"  data: {done.out}/{done.data_file}  sha256 {done.sha256[:16]}")
    if push_to_hub:
        typer.echo(f"  pushed: {push(out, push_to_hub, private=private)}")
