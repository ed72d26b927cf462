"""Where Prefect keeps task results: `orchestration.result_storage` as a storage block."""

from __future__ import annotations

import hashlib

from prefect import task

from lion_core.config import RunConfig


def storage_block_name(location: str) -> str:
    """A block name that is the same for the same location, on every worker."""
    return "lion-results-" + hashlib.sha256(location.encode()).hexdigest()[:12]


@task(name="result-storage", tags=["lion"], retries=2, retry_delay_seconds=5)
def result_storage(config: RunConfig) -> str | None:
    """The slug of the block that holds the run's task results. A URI or a path is saved as a
    RemoteFileSystem or LocalFileSystem block (credentials stay with the worker's environment, never in
    the block); a slug names a block that must already exist."""
    from prefect.filesystems import LocalFileSystem, RemoteFileSystem

    location = config.orchestration.result_storage
    if location is None or ("://" not in location and not location.startswith("/")):
        return location
    name = storage_block_name(location)
    if location.startswith("/"):
        LocalFileSystem(basepath=location).save(name, overwrite=True)
        return f"local-file-system/{name}"
    RemoteFileSystem(basepath=location).save(name, overwrite=True)
    return f"remote-file-system/{name}"
