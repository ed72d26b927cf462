"""Generation over the run's store: iteration k's hard and easy items drawn from, every candidate
committed with its outcome, and the pool update that makes iteration k+1's pools."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lion_core.config import RunConfig
from lion_core.generation.candidates import CANDIDATES_SCHEMA_VERSION, CandidateRow
from lion_core.generation.rounds import GeneratedInstructions, accepted_row, generate
from lion_core.llm.gateway import ChatGateway
from lion_core.pools import POOL_SCHEMA_VERSION, pool_table
from lion_core.results import GenerationReport, Pools
from lion_core.rows import rows_of, to_table
from lion_core.shards import commit_table
from lion_core.store import PoolRef, RunStore


def generation_stage(store: RunStore, k: int, cache_pool: PoolRef, judgments: PoolRef | None, gateway: ChatGateway,
                     config: RunConfig) -> tuple[PoolRef, GenerationReport]:
    """New instructions for iteration k+1 from iteration k's hard and easy items: every candidate,
    committed as iteration k's `candidates`, and the figures."""
    result = generate_from(store, k, cache_pool, judgments, gateway, config)
    ref = commit_table(store, k, "candidates", to_table(result.candidates, CandidateRow), CANDIDATES_SCHEMA_VERSION,
                       [cache_pool, *([judgments] if judgments else [])])
    return ref, result.report


def generate_from(store: RunStore, k: int, cache_pool: PoolRef, judgments: PoolRef | None, gateway: ChatGateway,
                  config: RunConfig) -> GeneratedInstructions:
    """The generation rounds seeded with the Cache Pool items the referee labelled hard and easy, or, with
    `loop.selection: random` (a control), with the whole Cache Pool on both sides whatever it said. No
    `judgments` (the one-shot baseline: no referee): the whole Cache Pool on both sides."""
    pool = store.read_pool(cache_pool).to_dict("records")
    if judgments is None:
        hard, easy = pool, pool
    else:
        by_id = {r["id"]: r for r in pool}
        labels = {r["id"]: r["label"] for r in store.read_table(judgments).select(["id", "label"]).to_pylist()}
        hard = [by_id[i] for i, lab in labels.items() if lab == "hard" and i in by_id]
        easy = [by_id[i] for i, lab in labels.items() if lab == "easy" and i in by_id]
    if judgments is not None and config.loop.selection == "random":  # the same templates and split, examples from anywhere
        hard, easy = (pool if hard else []), (pool if easy else [])
    return generate(gateway, hard_seeds=hard, easy_seeds=easy, cache_pool=pool, next_iteration=k + 1,
                    loop=config.loop, cfg=config.generator)


def accepted_rows(store: RunStore, candidates: PoolRef, next_iteration: int) -> list[dict[str, Any]]:
    """The new pool rows, rebuilt from the candidates file exactly as `generate` made them."""
    return [accepted_row(c, next_iteration) for c in rows_of(store.read_table(candidates), CandidateRow, candidates.uri)
            if c.status == "accepted"]


def update_pools(store: RunStore, k: int, cache_pool: PoolRef, new_rows: Sequence[dict[str, Any]],
                 candidates: PoolRef) -> Pools:
    """Iteration k+1: Train Pool = the new instructions, Cache Pool = old Cache Pool + new; committed
    together in one manifest write (`candidates` is their lineage)."""
    old = store.read_table(cache_pool).to_pylist()
    train = pool_table(new_rows)
    cache = pool_table([*old, *new_rows])
    refs = {
        "train_pool": store.write_table(k + 1, "train_pool", train, schema_version=POOL_SCHEMA_VERSION, parents=[candidates]),
        "cache_pool": store.write_table(k + 1, "cache_pool", cache, schema_version=POOL_SCHEMA_VERSION,
                                        parents=[cache_pool, candidates]),
    }
    store.commit(k + 1, refs, parents={"train_pool": [candidates], "cache_pool": [cache_pool, candidates]})
    return Pools(**refs)
