import json
import os
import uuid

import fsspec
import pyarrow as pa
import pytest

from lion_core.config import RunConfig, identity_of
from lion_core.errors import IntegrityError, StoreError
from lion_core.files import parquet_lion_metadata, read_bytes, write_bytes_atomic
from lion_core.pools import POOL_SCHEMA_VERSION, make_row, pool_table
from lion_core.store import PoolRef, RunStore, SourceRef


@pytest.fixture(params=["local", "memory", "s3"])
def runs_root(request, tmp_path):
    if request.param == "local":
        yield str(tmp_path / "runs")
        return
    if request.param == "s3":  # a real S3 API: no rename, no folders, listings that s3fs caches
        yield f"{request.getfixturevalue('s3_bucket')}/store-{uuid.uuid4().hex[:8]}/runs"
        return
    root = f"memory://lion-test-{uuid.uuid4().hex[:8]}/runs"
    yield root
    fs = fsspec.filesystem("memory")
    if fs.exists(root):
        fs.rm(root, recursive=True)


@pytest.fixture
def store(runs_root):
    return RunStore(runs_root, "r1", RunConfig())


def _pool(n=3, origin="seed", k=0):
    return pool_table([make_row(f"Instruction number {i}.", origin=origin, iteration=k) for i in range(n)])


def _corrupt(uri: str, data: bytes) -> None:
    fs, path = fsspec.core.url_to_fs(uri)
    fs.pipe_file(path, data)


def test_write_commit_read_roundtrip(store):
    seed = SourceRef(uri="/data/seeds.jsonl", sha256="ab" * 32)
    ref = store.write_table(0, "train_pool", _pool(), schema_version=POOL_SCHEMA_VERSION, parents=[seed])
    assert ref.uri == "run://r1/iter-0/train_pool.parquet"  # valid wherever the run folder goes
    assert store.resolve(ref.uri) == f"{store.run_uri}/iter-0/train_pool.parquet"
    assert ref.rows == 3 and len(ref.sha256) == 64
    store.commit(0, {"train_pool": ref}, parents={"train_pool": [seed]})
    assert store.ref(0, "train_pool") == ref
    df = store.read_pool(ref)
    assert list(df["instruction"]) == [f"Instruction number {i}." for i in range(3)]
    entry = store.manifest(0).files["train_pool"]
    assert entry.path == "iter-0/train_pool.parquet"
    assert entry.parents[0]["uri"] == "/data/seeds.jsonl"
    assert entry.config_hash == RunConfig().config_hash()
    assert entry.code_version
    meta = parquet_lion_metadata(read_bytes(store.resolve(ref.uri)))
    assert meta["run_id"] == "r1" and meta["iteration"] == 0 and meta["name"] == "train_pool"
    assert meta["config_hash"] == RunConfig().config_hash()
    assert meta["config"] == identity_of(RunConfig().to_json_dict())  # operations are in run.json and resumes.json


def test_lineage_inside_the_run_is_relative(store):
    train = store.write_table(0, "train_pool", _pool(), schema_version=POOL_SCHEMA_VERSION)
    store.commit(0, {"train_pool": train})
    nxt = store.write_table(1, "train_pool", _pool(2, "hard", 1), schema_version=POOL_SCHEMA_VERSION, parents=[train])
    m = store.commit(1, {"train_pool": nxt}, parents={"train_pool": [train]})
    parent = m.files["train_pool"].parents[0]
    assert parent["uri"] == "iter-0/train_pool.parquet" and parent["in_run"] is True
    assert parent["sha256"] == train.sha256
    assert store.iterations() == [0, 1]


def test_pool_ref_is_small_and_hashable(store):
    ref = store.write_table(0, "cache_pool", _pool(), schema_version=POOL_SCHEMA_VERSION)
    assert hash(ref) == hash(PoolRef(**ref.model_dump()))
    assert set(ref.model_dump()) == {"uri", "sha256", "rows", "schema_version"}


def test_altered_file_fails_verification(store):
    ref = store.write_table(0, "train_pool", _pool(), schema_version=POOL_SCHEMA_VERSION)
    other = store.write_table(0, "cache_pool", _pool(4), schema_version=POOL_SCHEMA_VERSION)
    _corrupt(store.resolve(ref.uri), read_bytes(store.resolve(other.uri)))
    with pytest.raises(IntegrityError, match="sha256 mismatch"):
        store.read_table(ref)


def test_a_file_read_once_is_verified_again_once_it_changes(tmp_path):
    """Reads of a local file are served from memory only while the file is the one verified: a file
    altered in place (same size, same inode) after a read still fails verification."""
    import os
    import time

    store = RunStore(str(tmp_path), "r1", RunConfig())
    ref = store.write_table(0, "train_pool", _pool(), schema_version=POOL_SCHEMA_VERSION)
    first = store.read_table(ref)
    assert store.read_table(ref) is first  # the shards of a stage read their pool once per process
    path = store.resolve(ref.uri)
    data = bytearray(read_bytes(store.resolve(ref.uri)))
    data[len(data) // 2] ^= 0xFF
    time.sleep(0.02)  # past the file system's timestamp granularity
    with open(path, "r+b") as fh:  # in place: the inode and the size stay
        fh.write(bytes(data))
    assert os.path.getsize(path) == len(data)
    with pytest.raises(IntegrityError, match="sha256 mismatch"):
        store.read_table(ref)


def test_truncated_file_fails_verification(store):
    ref = store.write_table(0, "train_pool", _pool(), schema_version=POOL_SCHEMA_VERSION)
    _corrupt(store.resolve(ref.uri), read_bytes(store.resolve(ref.uri))[:-100])
    with pytest.raises(IntegrityError, match="truncated"):
        store.read_table(ref)


def test_schema_version_must_match(store):
    ref = store.write_table(0, "scores", pa.table({"x": [1, 2]}), schema_version="scores/1")
    with pytest.raises(IntegrityError, match="schema version"):
        store.read_table(ref.model_copy(update={"schema_version": "scores/2"}))


def test_committed_file_is_never_overwritten_with_other_content(store):
    ref = store.write_table(0, "train_pool", _pool(), schema_version=POOL_SCHEMA_VERSION)
    store.commit(0, {"train_pool": ref})
    # same content: idempotent
    again = store.write_table(0, "train_pool", _pool(), schema_version=POOL_SCHEMA_VERSION)
    assert again == ref
    with pytest.raises(StoreError, match="refusing to overwrite"):
        store.write_table(0, "train_pool", _pool(5), schema_version=POOL_SCHEMA_VERSION)
    store.read_table(ref)  # still intact


def test_uncommitted_leftover_may_be_rewritten(store):
    store.write_table(0, "train_pool", _pool(5), schema_version=POOL_SCHEMA_VERSION)  # crash before commit
    ref = store.write_table(0, "train_pool", _pool(), schema_version=POOL_SCHEMA_VERSION)
    store.commit(0, {"train_pool": ref})
    assert store.table(0, "train_pool").to_pandas().shape[0] == 3


def test_commit_is_all_or_nothing(store):
    good = store.write_table(0, "train_pool", _pool(), schema_version=POOL_SCHEMA_VERSION)
    ghost = PoolRef(uri=store.file_uri(0, "cache_pool"), sha256="0" * 64, rows=1, schema_version=POOL_SCHEMA_VERSION)
    with pytest.raises(StoreError, match="does not exist"):
        store.commit(0, {"train_pool": good, "cache_pool": ghost})
    assert store.manifest(0) is None
    assert store.iterations() == []


def test_commit_refuses_a_different_file_under_a_committed_name(store):
    a = store.write_table(0, "train_pool", _pool(), schema_version=POOL_SCHEMA_VERSION)
    store.commit(0, {"train_pool": a})
    b = store.write_table(0, "other", _pool(4), schema_version=POOL_SCHEMA_VERSION)
    with pytest.raises(StoreError, match="already has a different 'train_pool'"):
        store.commit(0, {"train_pool": b.model_copy(update={"uri": a.uri})})


def test_iteration_folder_without_manifest_is_not_listed(store):
    store.write_table(3, "train_pool", _pool(), schema_version=POOL_SCHEMA_VERSION)
    assert store.iterations() == []


def test_invalid_pool_is_not_written(store):
    bad = _pool().to_pylist()
    bad.append(dict(bad[0]))
    table = pa.Table.from_pylist(bad, schema=_pool().schema)
    with pytest.raises(StoreError, match="duplicate id"):
        store.write_table(0, "train_pool", table, schema_version=POOL_SCHEMA_VERSION)
    fs, path = fsspec.core.url_to_fs(store.file_uri(0, "train_pool"))
    assert not fs.exists(path)


def test_run_info_is_written_once(store):
    store.write_run_info({"seed": {"uri": "x"}})
    info = store.read_run_info()
    assert info["config_hash"] == RunConfig().config_hash() and info["seed"] == {"uri": "x"}
    with pytest.raises(StoreError, match="already exists"):
        store.write_run_info()


def test_writes_need_the_config(runs_root):
    with pytest.raises(StoreError, match="needs the run config"):
        RunStore(runs_root, "r1").write_table(0, "x", _pool(), schema_version=POOL_SCHEMA_VERSION)


@pytest.mark.parametrize("run_id", ["../escape", "", "a/b", ".hidden", "x" * 200])
def test_bad_run_ids_are_rejected(runs_root, run_id):
    with pytest.raises(StoreError, match="run id"):
        RunStore(runs_root, run_id)


def test_bad_artifact_names_are_rejected(store):
    with pytest.raises(StoreError, match="artifact name"):
        store.file_uri(0, "../x")


def test_relative_local_root_becomes_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    s = RunStore("runs", "r1", RunConfig())
    assert s.run_uri == str(tmp_path / "runs" / "r1")


def test_local_crash_before_rename_leaves_no_file(tmp_path, monkeypatch):
    target = tmp_path / "d" / "f.parquet"
    write_bytes_atomic(str(target), b"old complete content")

    def crash(*a, **k):
        raise OSError("simulated crash before rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        write_bytes_atomic(str(target), b"new")
    assert target.read_bytes() == b"old complete content"
    assert os.listdir(target.parent) == ["f.parquet"]  # no temp file left behind
    fresh = tmp_path / "d" / "g.parquet"
    with pytest.raises(OSError):
        write_bytes_atomic(str(fresh), b"new")
    assert not fresh.exists()


def test_manifest_is_valid_json_listing_hashes(store):
    ref = store.write_table(0, "train_pool", _pool(), schema_version=POOL_SCHEMA_VERSION)
    store.commit(0, {"train_pool": ref})
    m = json.loads(read_bytes(store.manifest_uri(0)))
    assert m["files"]["train_pool"]["sha256"] == ref.sha256
    assert m["schema_version"] == "manifest/1"


def test_a_moved_run_reads_its_refs_at_the_new_place_and_refuses_a_wrong_copy(tmp_path):
    import shutil

    from lion_core.config import RunConfig
    from lion_core.errors import IntegrityError

    store = RunStore(str(tmp_path / "a"), "mv", RunConfig())
    ref = store.write_table(0, "train_pool", _pool(), schema_version=POOL_SCHEMA_VERSION)
    store.commit(0, {"train_pool": ref})
    shutil.move(str(tmp_path / "a" / "mv"), str(tmp_path / "b" / "mv"))
    moved = RunStore(str(tmp_path / "b"), "mv")
    assert moved.ref(0, "train_pool") == ref  # the same reference, read at the new place
    assert len(moved.read_table(ref)) == len(_pool())
    # another run folder under the same id, with different content: its hash gives it away
    other = RunStore(str(tmp_path / "c"), "mv", RunConfig())
    other.write_table(0, "train_pool", _pool().slice(0, 1), schema_version=POOL_SCHEMA_VERSION)
    with pytest.raises(IntegrityError, match="sha256 mismatch"):
        other.read_table(ref)
