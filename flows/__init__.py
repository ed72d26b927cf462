"""Prefect flows: the Lion loop read top-down (imitation, discrimination, generation per iteration).

The stages are not wired yet; until then `lion init` (lion_core.runs) creates a run's iteration 0.
"""
