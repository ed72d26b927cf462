"""Shards: an API stage runs as independent slices of a pool (the teacher's answers, the referee's
verdicts; an evaluation's too), each written as an uncommitted part, then merged in row order and
committed (lion_core.merge).

A shard writes its part whatever failed in it and says how many of its items failed; whether that is
too many is judged over the whole stage (`check_stage_failures`), so one item that can never be
answered does not stop a run because it sits in a small shard."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from lion_core.errors import StageIncomplete
from lion_core.results import Shard
from lion_core.store import PoolRef, RunStore


def shard_bounds(n_rows: int, shard_size: int) -> list[tuple[int, int]]:
    """[lo, hi) row ranges of at most shard_size rows; an empty pool has no shards."""
    return [(lo, min(lo + shard_size, n_rows)) for lo in range(0, n_rows, shard_size)]


def part_name(shard: Shard) -> str:
    return f"{shard.name}.part-{shard.lo:07d}-{shard.hi:07d}"


def shard_rows(store: RunStore, shard: Shard) -> list[dict[str, Any]]:
    """The shard's rows of its pool (the pool is read and verified once per process, see read_table)."""
    return store.read_table(shard.pool).slice(shard.lo, shard.hi - shard.lo).to_pylist()


def rows_with_ids(store: RunStore, ref: PoolRef, ids: Sequence[str]) -> list[dict[str, Any]]:
    """The rows of an artifact whose `id` is one of `ids` (a shard's share of a whole-pool table)."""
    table = store.read_table(ref)
    return table.filter(pc.is_in(table["id"], value_set=pa.array(list(ids), pa.string()))).to_pylist()


@dataclass(frozen=True)
class Written:
    """A shard's part and its items without an answer after the gateway's retries."""

    part: PoolRef
    failed: int
    final: int
    """Of the failed, those the gateway will not send again: their budget of unusable replies is spent
    (`lion run --retry-failed` sends them)."""


def too_many_failed(n_failed: int, n: int, max_fraction: float) -> bool:
    return bool(n) and n_failed / n > max_fraction


def check_stage_failures(n_failed: int, n: int, max_fraction: float, what: str, final: int = 0) -> None:
    if too_many_failed(n_failed, n, max_fraction):
        given_up = (f"; {final} of them were given up after their unusable replies (empty, refused): a resume "
                    f"leaves those, `lion run --resume RUN --retry-failed` asks them again, or raise "
                    f"orchestration.max_failed_fraction to go on without them") if final else ""
        raise StageIncomplete(f"{what}: {n_failed} of {n} items have no answer after every retry (allowed: "
                              f"{max_fraction:.0%}, orchestration.max_failed_fraction); the failures are recorded "
                              f"with their reasons, and a resume sends the others again{given_up}")


def committed(store: RunStore, k: int, name: str) -> PoolRef | None:
    """Iteration k's committed `name`, or None when that stage has not finished."""
    manifest = store.manifest(k)
    entry = manifest.files.get(name) if manifest else None
    return store.ref_from_entry(entry) if entry else None


def commit_table(store: RunStore, k: int, name: str, table: pa.Table, schema_version: str,
                 parents: list[PoolRef]) -> PoolRef:
    """Write iteration k's `name` and commit it in the same step."""
    ref = store.write_table(k, name, table, schema_version=schema_version, parents=parents)
    store.commit(k, {name: ref}, parents={name: parents})
    return ref
