"""Prefect flows: the Lion loop read top-down (imitation, discrimination, generation per iteration).

`lion.py` is the loop; `imitation`, `discrimination` and `generation` are its sub-flows.
"""
