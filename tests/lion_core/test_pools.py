import pyarrow as pa
import pytest

from lion_core.errors import StoreError
from lion_core.pools import POOL_SCHEMA, instruction_id, make_row, pool_table, validate_pool


def test_id_is_stable_under_whitespace_and_unicode_normalisation():
    a = instruction_id("Name  three\tcolours.", "")
    assert a == instruction_id(" Name three colours. ", "")
    assert a == instruction_id("Name three colours.")
    # NFKC: a full-width letter and its ASCII form are the same instruction
    assert instruction_id("Ｎame three colours.") == a
    assert len(a) == 16 and int(a, 16) >= 0


def test_id_depends_on_input_and_case():
    base = instruction_id("Translate to French.", "Good morning")
    assert base != instruction_id("Translate to French.", "Good night")
    assert base != instruction_id("Translate to French.", "")
    assert instruction_id("Name a colour.") != instruction_id("name a colour.")
    # the separator keeps (instruction, input) pairs apart
    assert instruction_id("a b", "c") != instruction_id("a", "b c")


def test_pool_table_roundtrip_has_the_schema():
    t = pool_table([make_row("Say hi.", origin="seed", iteration=0, metadata={"k": 1})])
    assert t.schema.equals(POOL_SCHEMA)
    assert t.column("metadata").to_pylist() == ['{"k": 1}']


@pytest.mark.parametrize("mutate,match", [
    (lambda r: r.update(origin="weird"), "origin 'weird'"),
    (lambda r: r.update(id="0" * 16), "is not the hash"),
    (lambda r: r.update(instruction="   ", id=instruction_id("   ")), "empty instruction"),
])
def test_validate_pool_rejects_bad_rows(mutate, match):
    rows = [make_row("First.", origin="seed", iteration=0), make_row("Second.", origin="hard", iteration=1)]
    mutate(rows[1])
    with pytest.raises(StoreError, match=f"row 1: .*{match}"):
        pool_table(rows)


def test_validate_pool_rejects_duplicate_ids():
    r = make_row("Same.", origin="seed", iteration=0)
    with pytest.raises(StoreError, match="row 1: duplicate id"):
        pool_table([r, dict(r)])


def test_validate_pool_rejects_wrong_schema():
    with pytest.raises(StoreError, match="does not match pool schema"):
        validate_pool(pa.table({"instruction": ["x"]}))
