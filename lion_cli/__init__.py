"""The `lion` command line: `main` assembles the commands of the other modules (one per command group)
and runs them under `supervision` (stop signals, the stop deadline, the forced exit)."""
