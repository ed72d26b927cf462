"""Typed rows of the run's tables: one dataclass per table, its Arrow schema derived from the fields.

`pa.Table.from_pylist(dicts, schema=...)` turns a misspelt or missing key into a column of nulls
without a word; building rows as dataclasses makes either a TypeError where the row is made, and
`rows_of` refuses a table whose columns are not the row's. Python types map to the Arrow types the
tables have always had (int is int32), so files written before the rows were typed read the same.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

import pyarrow as pa

from lion_core.errors import StoreError

_ARROW = {str: pa.string(), int: pa.int32(), float: pa.float64(), bool: pa.bool_()}

R = TypeVar("R")


def not_null() -> Any:
    """A field that may not hold None (a column declared not nullable)."""
    return dataclasses.field(metadata={"nullable": False})


def count() -> Any:
    """An int64 column (a count of a table whose ints have always been 64-bit)."""
    return dataclasses.field(metadata={"arrow": pa.int64()})


@functools.cache
def arrow_schema(row_type: type) -> pa.Schema:
    """The row type's schema: one column per field, in field order; `X | None` and plain fields are
    nullable unless declared `not_null()`."""
    hints = typing.get_type_hints(row_type)
    columns = []
    for f in dataclasses.fields(row_type):
        hint = hints[f.name]
        base = next((a for a in typing.get_args(hint) if a is not type(None)), hint)
        columns.append(pa.field(f.name, f.metadata.get("arrow", _ARROW[base]), nullable=f.metadata.get("nullable", True)))
    return pa.schema(columns)


def to_table(rows: Iterable[Any], row_type: type) -> pa.Table:
    """The rows as a table of `row_type`'s schema; every row must be a `row_type`."""
    rows = list(rows)
    for i, row in enumerate(rows):
        if type(row) is not row_type:
            raise TypeError(f"row {i} is a {type(row).__name__}, not a {row_type.__name__}")
    schema = arrow_schema(row_type)
    return pa.table([pa.array([getattr(r, name) for r in rows], type=schema.field(name).type) for name in schema.names],
                    schema=schema)


def rows_of(table: pa.Table, row_type: type[R], where: str = "table") -> list[R]:
    """The table's rows as `row_type`; a missing or extra column is an error naming it."""
    check_columns(table, row_type, where)
    return [row_type(**r) for r in table.to_pylist()]


def check_columns(table: pa.Table, row_type: type, where: str = "table") -> None:
    expected = arrow_schema(row_type).names
    missing = [c for c in expected if c not in table.column_names]
    extra = [c for c in table.column_names if c not in expected]
    if missing or extra:
        raise StoreError(f"{where}: not a {row_type.__name__} table: missing columns {missing}, unexpected {extra}")


def as_dicts(rows: Sequence[Any]) -> list[dict[str, Any]]:
    return [dataclasses.asdict(r) for r in rows]


def table_of_dicts(rows: Iterable[dict[str, Any]], schema: pa.Schema, where: str = "table") -> pa.Table:
    """A table from row dicts (tables whose rows are made in one place, such as pools), each dict's keys
    checked against the schema first: a misspelt or missing key is an error, not a column of nulls."""
    rows = list(rows)
    expected = set(schema.names)
    for i, row in enumerate(rows):
        if row.keys() != expected:
            raise StoreError(f"{where}: row {i}: missing keys {sorted(expected - row.keys())}, "
                             f"unexpected {sorted(row.keys() - expected)}")
    return pa.Table.from_pylist(rows, schema=schema)
