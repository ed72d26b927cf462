"""The instruction pool: row schema, stable ids and validation.

A pool row is one instruction (plus an optional input, as in Alpaca data). Its `id` is a hash of the
normalised instruction and input, so the same instruction gets the same id in every pool, iteration
and run; that id keys the teacher answers reused across iterations.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Iterable
from typing import Any

import pandas as pd
import pyarrow as pa

from lion_core.errors import StoreError
from lion_core.rows import table_of_dicts

POOL_SCHEMA_VERSION = "pool/1"
ORIGINS = ("seed", "hard", "easy", "eval")

POOL_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("instruction", pa.string(), nullable=False),
        pa.field("input", pa.string(), nullable=False),
        pa.field("origin", pa.string(), nullable=False),
        pa.field("iteration", pa.int32(), nullable=False),
        pa.field("parent_id", pa.string(), nullable=True),
        pa.field("metadata", pa.string(), nullable=False),  # a JSON object
    ]
)

_WS = re.compile(r"\s+")


def normalise(text: str) -> str:
    """NFKC, whitespace runs collapsed to one space, trimmed. Case is kept: it can change meaning."""
    return _WS.sub(" ", unicodedata.normalize("NFKC", text)).strip()


def instruction_id(instruction: str, input_text: str = "") -> str:
    """A stable 16-hex-digit id of (instruction, input) after normalisation."""
    key = normalise(instruction) + "\x1f" + normalise(input_text or "")
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]


def make_row(
    instruction: str,
    input_text: str = "",
    *,
    origin: str,
    iteration: int,
    parent_id: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "id": instruction_id(instruction, input_text),
        "instruction": instruction,
        "input": input_text or "",
        "origin": origin,
        "iteration": iteration,
        "parent_id": parent_id,
        "metadata": json.dumps(metadata or {}, ensure_ascii=False, sort_keys=True),
    }


def pool_table(rows: Iterable[dict[str, Any]]) -> pa.Table:
    """Build a pool table from row dicts and check it; raises StoreError on a bad pool."""
    table = table_of_dicts(rows, POOL_SCHEMA, "pool")
    validate_pool(table)
    return table


def validate_pool(table: pa.Table, where: str = "pool") -> None:
    """Check schema, id uniqueness and consistency, origins and non-empty instructions."""
    if not table.schema.equals(POOL_SCHEMA, check_metadata=False):
        raise StoreError(f"{where}: schema {table.schema} does not match pool schema {POOL_SCHEMA_VERSION}")
    df = table.select(["id", "instruction", "input", "origin"]).to_pandas()
    bad_origin = df.loc[~df["origin"].isin(ORIGINS)]
    if len(bad_origin):
        i = int(bad_origin.index[0])
        raise StoreError(f"{where}: row {i}: origin {bad_origin['origin'].iloc[0]!r} is not one of {ORIGINS}")
    empty = df.loc[df["instruction"].map(lambda s: not s.strip())]
    if len(empty):
        raise StoreError(f"{where}: row {int(empty.index[0])}: empty instruction")
    dup = df["id"].duplicated()
    if dup.any():
        i = int(dup.idxmax())
        raise StoreError(f"{where}: row {i}: duplicate id {df['id'].iloc[i]}")
    expected = [instruction_id(a, b) for a, b in zip(df["instruction"], df["input"], strict=True)]
    mismatch = df["id"] != pd.Series(expected, index=df.index)
    if mismatch.any():
        i = int(mismatch.idxmax())
        raise StoreError(f"{where}: row {i}: id {df['id'].iloc[i]} is not the hash of its instruction and input")
