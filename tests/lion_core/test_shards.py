"""Shards of a pool, the failure threshold of a stage, and the merge of the parts in row order."""

import pyarrow as pa
import pytest

from lion_core.discrimination.judging import JUDGMENTS_SCHEMA, JUDGMENTS_SCHEMA_VERSION
from lion_core.errors import StageIncomplete
from lion_core.imitation.answers import ANSWERS_SCHEMA, ANSWERS_SCHEMA_VERSION, AnswerRow
from lion_core.merge import merge_parts, part_format
from lion_core.rows import to_table
from lion_core.shards import check_stage_failures, shard_bounds


def test_shard_bounds_cover_every_row_once():
    assert shard_bounds(0, 4) == []
    assert shard_bounds(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert shard_bounds(8, 4) == [(0, 4), (4, 8)]


def test_a_stage_fails_only_beyond_the_allowed_fraction():
    check_stage_failures(1, 10, 0.1, "iteration 0 judgments")
    check_stage_failures(0, 0, 0.0, "an empty stage")
    with pytest.raises(StageIncomplete, match="iteration 0 judgments: 2 of 10 items have no answer after every retry"):
        check_stage_failures(2, 10, 0.1, "iteration 0 judgments")
    with pytest.raises(StageIncomplete, match="2 of them were given up .* --retry-failed"):
        check_stage_failures(3, 10, 0.1, "iteration 0 judgments", final=2)


def test_parts_merge_in_row_order_into_the_table_of_their_kind(tmp_path):
    from lion_core.config import RunConfig
    from lion_core.store import RunStore

    assert part_format("judgments-base") == (JUDGMENTS_SCHEMA, JUDGMENTS_SCHEMA_VERSION)
    assert part_format("teacher_answers_cache") == (ANSWERS_SCHEMA, ANSWERS_SCHEMA_VERSION)
    store = RunStore(str(tmp_path), "r", RunConfig())

    def part(name, ids):
        rows = [AnswerRow(id=i, instruction=f"q{i}", input="", answer=f"a{i}", finish_reason="stop", status="ok", error=None)
                for i in ids]
        return store.write_table(0, name, to_table(rows, AnswerRow), schema_version=ANSWERS_SCHEMA_VERSION)

    parts = [part("teacher_answers.part-0000000-0000002", ["a", "b"]), part("teacher_answers.part-0000002-0000003", ["c"])]
    merged = merge_parts(store, 0, "teacher_answers", parts, [])
    assert store.read_table(merged).column("id").to_pylist() == ["a", "b", "c"]
    assert store.ref(0, "teacher_answers") == merged  # committed
    empty = merge_parts(store, 0, "judgments", [], [])
    assert empty.rows == 0 and store.read_table(empty).schema.equals(JUDGMENTS_SCHEMA)
    assert isinstance(store.read_table(empty), pa.Table)
