"""Export tasks: the run's dataset folder, and its upload to the Hugging Face Hub (retried: the network)."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_markdown_artifact

from lion_core.config import RunConfig
from lion_core.dataset_export import HubPushError, push_to_hub, write_dataset
from lion_core.report import artifact_key
from lion_core.results import DatasetExport
from lion_core.store import RunStore


@task(name="export-dataset", task_run_name="export-dataset-{run_id}", persist_result=False)
def export_dataset(config: RunConfig, run_id: str, out: str, license: str, languages: list[str]) -> DatasetExport:
    """Never cached: the run may have grown since the last export, and rewriting is cheap."""
    return write_dataset(RunStore(config.storage.runs_root, run_id, config), config, out, license=license,
                         languages=languages)


def _worth_retrying(task, task_run, state) -> bool:
    """Retry a push the network or the Hub's load failed, not one the Hub refused as it is."""
    try:
        state.result()
    except HubPushError as err:
        return err.retryable
    except Exception:  # noqa: BLE001 - anything else is not ours to judge: retry as Prefect would
        return True
    return False


@task(name="push-dataset", task_run_name="push-dataset-{repo}", retries=2, retry_delay_seconds=30,
      retry_condition_fn=_worth_retrying, persist_result=False)
def push_dataset(exported: DatasetExport, repo: str, private: bool) -> DatasetExport:
    url = push_to_hub(exported.out, repo, private=private)
    return exported.model_copy(update={"pushed_to": url})


@task(name="export-report", persist_result=False)
def publish_export(exported: DatasetExport) -> None:
    origins = ", ".join(f"{k} {v}" for k, v in exported.by_origin.items())
    iterations = ", ".join(f"{k}: {v}" for k, v in exported.by_iteration.items())
    create_markdown_artifact(
        f"# Dataset of run {exported.run_id}\n\n{exported.rows} instructions ({origins}), {exported.answered} with a "
        f"teacher answer; entered per iteration: {iterations}.\n\n- folder: `{exported.out}`\n- data: "
        f"`{exported.data_file}` (sha256 `{exported.sha256[:16]}`)\n- Hub: {exported.pushed_to or 'not pushed'}\n",
        key=artifact_key("lion", exported.run_id, "dataset"), description=f"Dataset export of run {exported.run_id}")
