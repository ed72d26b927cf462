"""Typed rows: each table's schema comes from its row type, is the schema its files have always had,
and a misspelt or missing column is an error instead of a column of nulls."""

import pyarrow as pa
import pytest

from lion_core.discrimination.judging import JUDGMENTS_SCHEMA, JudgmentRow
from lion_core.errors import StoreError
from lion_core.generation.candidates import CANDIDATES_SCHEMA, CandidateRow
from lion_core.imitation.answers import ANSWERS_SCHEMA, AnswerRow
from lion_core.rows import rows_of, to_table

# The schemas as they were written out before the rows were typed (answers/1, judgments/2, candidates/2):
# files made then must read the same, so the derived schemas must equal these, column for column.
PINNED = {
    AnswerRow: pa.schema([
        ("id", pa.string()), ("instruction", pa.string()), ("input", pa.string()), ("answer", pa.string()),
        ("finish_reason", pa.string()), ("status", pa.string()), ("error", pa.string()),
    ]),
    JudgmentRow: pa.schema([
        ("id", pa.string()), ("instruction", pa.string()), ("input", pa.string()),
        ("t_score_t_first", pa.float64()), ("s_score_t_first", pa.float64()),
        ("t_score_s_first", pa.float64()), ("s_score_s_first", pa.float64()),
        ("mean_t", pa.float64()), ("mean_s", pa.float64()), ("d", pa.float64()), ("label", pa.string()),
        ("reason", pa.string()), ("raw_t_first", pa.string()), ("raw_s_first", pa.string()), ("asks", pa.int32()),
    ]),
    CandidateRow: pa.schema([
        ("round", pa.int32()), ("origin", pa.string()), ("seed_id", pa.string()), ("seed_instruction", pa.string()),
        ("seed_has_input", pa.bool_()), ("max_tokens", pa.int32()), ("cached", pa.bool_()), ("raw", pa.string()),
        ("finish_reason", pa.string()), ("instruction", pa.string()), ("input", pa.string()),
        ("status", pa.string()), ("reason", pa.string()), ("max_rouge_l", pa.float64()), ("most_similar", pa.string()),
    ]),
}


@pytest.mark.parametrize("row_type,schema", [(AnswerRow, ANSWERS_SCHEMA), (JudgmentRow, JUDGMENTS_SCHEMA),
                                             (CandidateRow, CANDIDATES_SCHEMA)])
def test_each_schema_is_derived_from_its_row_and_is_the_one_files_have(row_type, schema):
    assert schema.equals(PINNED[row_type], check_metadata=True)


def _answer(**kw):
    return AnswerRow(**{"id": "a", "instruction": "Say hi.", "input": "", "answer": "hi", "finish_reason": "stop",
                        "status": "ok", "error": None, **kw})


def test_a_misspelt_or_missing_field_is_an_error_where_the_row_is_made():
    with pytest.raises(TypeError, match="anwser"):
        _answer(anwser="hi")
    with pytest.raises(TypeError, match="error"):
        AnswerRow(id="a", instruction="Say hi.", input="", answer="hi", finish_reason="stop", status="ok")


@pytest.mark.parametrize("row_type", [JudgmentRow, CandidateRow])
def test_every_column_of_the_verdicts_and_candidates_must_be_given(row_type):
    with pytest.raises(TypeError, match="missing"):
        row_type(id="a") if row_type is JudgmentRow else row_type(round=1, origin="hard")


def test_rows_round_trip_and_a_table_with_a_missing_or_extra_column_is_refused():
    rows = [_answer(), _answer(id="b", answer=None, status="failed", error="APIError: boom")]
    table = to_table(rows, AnswerRow)
    assert table.schema.equals(ANSWERS_SCHEMA) and rows_of(table, AnswerRow) == rows
    with pytest.raises(StoreError, match=r"missing columns \['error'\]"):
        rows_of(table.drop_columns(["error"]), AnswerRow, "teacher_answers")
    with pytest.raises(StoreError, match=r"unexpected \['eror'\]"):
        rows_of(table.append_column("eror", pa.array([None, None], pa.string())), AnswerRow)


def test_a_row_of_another_table_is_refused():
    with pytest.raises(TypeError, match="row 0 is a JudgmentRow, not a AnswerRow"):
        to_table([JudgmentRow.unjudged("a", "x", "", "missing_answer", "no teacher answer")], AnswerRow)


def test_a_pool_row_with_a_misspelt_key_is_refused_not_written_with_nulls():
    from lion_core.pools import make_row, pool_table

    row = make_row("Name three rivers.", origin="seed", iteration=0)
    assert pool_table([row]).num_rows == 1
    bad = {**{k: v for k, v in row.items() if k != "parent_id"}, "parentid": None}
    with pytest.raises(StoreError, match=r"pool: row 0: missing keys \['parent_id'\], unexpected \['parentid'\]"):
        pool_table([bad])


def test_an_evaluations_scores_keep_their_types_when_a_column_is_all_empty():
    from lion_core.evaluation_store import ScoreRow

    row = ScoreRow(checkpoint="base", category="all", questions=2, relative_score=None, relative_score_ci95_low=None,
                   relative_score_ci95_high=None, relative_score_reference_first=None, relative_score_student_first=None,
                   wins=0, ties=0, losses=0, judged_reference_first=0, judged_student_first=0, failed_reference_first=2,
                   failed_student_first=2, order_inconsistency_rate=None)
    table = to_table([row], ScoreRow)
    # inferred from dicts, an all-None column came out as Arrow's null type; typed, it stays a float
    assert table.schema.field("relative_score").type == pa.float64() and table.schema.field("wins").type == pa.int64()
