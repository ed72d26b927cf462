"""Merging a stage's shard parts into the committed table, with the schema of the table's kind. Apart
from lion_core.shards because it knows the row types of the stages, whose shells use the shards."""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa

from lion_core.discrimination.judging import JUDGMENTS_SCHEMA, JUDGMENTS_SCHEMA_VERSION
from lion_core.imitation.answers import ANSWERS_SCHEMA, ANSWERS_SCHEMA_VERSION
from lion_core.shards import commit_table
from lion_core.store import PoolRef, RunStore


def part_format(name: str) -> tuple[pa.Schema, str]:
    """The schema and version of the artifact `name` that shards are merged into: `judgments*` are
    verdicts (an evaluation's `judgments-<checkpoint>` too), anything else is answers."""
    if name.startswith("judgments"):
        return JUDGMENTS_SCHEMA, JUDGMENTS_SCHEMA_VERSION
    return ANSWERS_SCHEMA, ANSWERS_SCHEMA_VERSION


def merge_parts(store: RunStore, k: int, name: str, parts: Sequence[PoolRef], parents: Sequence[PoolRef]) -> PoolRef:
    """Concatenate the parts (in row order) into iteration k's `name` and commit it; the parts stay as written."""
    schema, schema_version = part_format(name)
    tables = [store.read_table(p).select(schema.names).cast(schema) for p in parts]
    table = pa.concat_tables(tables) if tables else schema.empty_table()
    return commit_table(store, k, name, table, schema_version, list(parents))
