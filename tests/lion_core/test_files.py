"""Files at any fsspec location: whole writes, whole reads, and run references refused unresolved."""

import pytest

from lion_core.errors import StoreError
from lion_core.files import exists, read_bytes, write_bytes_atomic
from lion_core.store import RunStore


def test_an_atomic_write_replaces_the_whole_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "sub" / "f.bin"
    write_bytes_atomic(str(target), b"first")
    write_bytes_atomic(str(target), b"second")
    assert read_bytes(str(target)) == b"second" and exists(str(target))
    assert [p.name for p in target.parent.iterdir()] == ["f.bin"]


def test_a_run_reference_is_resolved_by_the_runs_root_it_lives_under(tmp_path):
    with pytest.raises(StoreError, match="a run reference"):
        read_bytes("run://r/iter-0/x.parquet")
    assert RunStore(str(tmp_path / "a"), "r").resolve("run://r/iter-0/x.parquet") == f"{tmp_path}/a/r/iter-0/x.parquet"
    assert RunStore(str(tmp_path / "b"), "other").resolve("run://r/iter-0") == f"{tmp_path}/b/r/iter-0"
    with pytest.raises(StoreError, match="invalid"):
        RunStore(str(tmp_path), "r").resolve("run://../etc/passwd")
