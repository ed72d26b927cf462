"""Lion's Prefect-server plumbing: the local API `lion` starts for itself (`local_api`), the concurrency
limits that share each API key's budget (`limits`), the slot leases and their reclaim (`leases`), and the
crash marking of runs whose process ended (`orphans`). It holds no flow and no task, and imports none of
flows/, tasks/ or lion_cli/: they build on it."""
