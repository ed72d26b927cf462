"""Publishing a run's result: what it distilled, as a Hugging Face dataset folder, optionally pushed to the Hub."""

from __future__ import annotations

from prefect import flow

from lion_core.config import load_config
from lion_core.dataset_export import default_export_dir
from lion_core.results import DatasetExport
from lion_core.store import validate_run_id
from lion_prefect.secrets import export_store_password
from tasks.export import export_dataset, publish_export, push_dataset


@flow(name="lion-export", flow_run_name="export-{run_id}")
def export(config_path: str, run_id: str, out: str | None = None, push_to_hub: str | None = None, private: bool = True,
           license: str = "other", languages: list[str] | None = None) -> DatasetExport:
    """Write run `run_id`'s dataset (every instruction with its teacher answer, origin, iteration and
    referee scores; Parquet and a dataset card) and push it to the Hub when `push_to_hub` names a repo.

    Args:
        config_path: The run's config (YAML), as the worker sees it.
        run_id: The run to export.
        out: Folder to write; empty: `dataset` beside the run's checkpoints. An earlier export there is replaced.
        push_to_hub: A Hugging Face dataset repo (user/name) to upload to, with the worker's HF_TOKEN; empty: none.
        private: Visibility of a repo the push creates.
        license: Licence id for the card's header.
        languages: Language codes for the card's header; empty: en.
    """
    config = load_config(config_path)
    export_store_password(config.storage)  # storage.password_secret: the store reads it from the environment
    run_id = validate_run_id(run_id)
    exported = export_dataset(config, run_id, out or default_export_dir(config, run_id), license, languages or ["en"])
    if push_to_hub:
        exported = push_dataset(exported, push_to_hub, private)
    publish_export(exported)
    return exported
