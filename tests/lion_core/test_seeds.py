import json

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lion_core.errors import SeedError
from lion_core.pools import instruction_id
from lion_core.seeds import load_seeds


def _jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


# -- the public data -------------------------------------------------------------------------

def test_self_instruct_seed_tasks_take_input_from_instances(shared_data):
    path = shared_data / "stanford_alpaca" / "seed_tasks.jsonl"
    raw = [json.loads(line) for line in path.read_text().splitlines()]
    seeds = load_seeds(str(path))
    assert seeds.records_read == 175
    assert len(seeds.rows) + seeds.duplicates_dropped == 175
    by_id = {r["id"]: r for r in seeds.rows}
    for rec in raw:
        inst = rec["instances"][0]
        row = by_id[instruction_id(rec["instruction"], inst["input"])]
        assert row["input"] == inst["input"]
        meta = json.loads(row["metadata"])
        assert meta.get("output", "") == inst["output"]
        assert meta["extra"]["name"] == rec["name"]
    assert sum(bool(r["input"]) for r in seeds.rows) == sum(bool(r["instances"][0]["input"]) for r in raw)
    assert {r["origin"] for r in seeds.rows} == {"seed"} and {r["iteration"] for r in seeds.rows} == {0}


def test_seed_tasks_parquet_gives_the_same_pool(shared_data):
    a = load_seeds(str(shared_data / "stanford_alpaca" / "seed_tasks.jsonl"))
    b = load_seeds(str(shared_data / "stanford_alpaca" / "seed_tasks.parquet"))
    assert [r["id"] for r in a.rows] == [r["id"] for r in b.rows]


def test_alpaca_52k_loads(shared_data):
    seeds = load_seeds(str(shared_data / "stanford_alpaca" / "alpaca_data_52k_en_via_open-chinese.parquet"))
    assert seeds.records_read == 52002
    # the datasheet's "all instructions unique" is about instruction text; (instruction, input) pairs are too
    assert len(seeds.rows) == 52002 - seeds.duplicates_dropped
    assert seeds.duplicates_dropped == 0
    assert sum(bool(r["input"]) for r in seeds.rows) == 20074


# -- formats -----------------------------------------------------------------------------------

def test_json_list_csv_and_parquet_agree(tmp_path):
    records = [
        {"instruction": "Add the numbers.", "input": "2, 3", "output": "5"},
        {"instruction": "Name a prime.", "input": "", "output": "7"},
        {"instruction": "Say hello.", "input": None},
    ]
    j = tmp_path / "s.json"
    j.write_text(json.dumps(records))
    c = tmp_path / "s.csv"
    pd.DataFrame(records).fillna("").to_csv(c, index=False)
    p = tmp_path / "s.parquet"
    pq.write_table(pa.Table.from_pylist(records), p)
    ids = [[r["id"] for r in load_seeds(str(f)).rows] for f in (j, c, p)]
    assert ids[0] == ids[1] == ids[2]
    assert len(ids[0]) == 3
    row = load_seeds(str(j)).rows[0]
    assert (row["instruction"], row["input"], json.loads(row["metadata"])["output"]) == ("Add the numbers.", "2, 3", "5")


def test_csv_without_input_column(tmp_path):
    c = tmp_path / "s.csv"
    c.write_text("instruction\nWrite a poem.\nTell a joke.\n")
    seeds = load_seeds(str(c))
    assert [r["input"] for r in seeds.rows] == ["", ""]


def test_exact_duplicates_are_dropped_and_counted(tmp_path):
    path = _jsonl(tmp_path / "s.jsonl", [
        {"instruction": "Explain gravity.", "input": ""},
        {"instruction": "Explain  gravity. ", "input": ""},   # same after whitespace normalisation
        {"instruction": "Explain gravity.", "input": "to a child"},  # different input: kept
        {"instruction": "Explain gravity.", "input": ""},
    ])
    seeds = load_seeds(path)
    assert (seeds.records_read, seeds.duplicates_dropped, len(seeds.rows)) == (4, 2, 2)
    assert seeds.duplicate_examples[0] == "line 2 repeats line 1"


def test_source_ref_hashes_the_file(tmp_path):
    path = _jsonl(tmp_path / "s.jsonl", [{"instruction": "A."}])
    import hashlib
    assert load_seeds(path).source.sha256 == hashlib.sha256((tmp_path / "s.jsonl").read_bytes()).hexdigest()


def test_fsspec_uri(tmp_path):
    import fsspec
    fs = fsspec.filesystem("memory")
    fs.pipe_file("/seed-test/s.jsonl", b'{"instruction": "Be brief."}\n')
    assert load_seeds("memory:///seed-test/s.jsonl").rows[0]["instruction"] == "Be brief."


# -- bad input: file, position and reason ------------------------------------------------------

@pytest.mark.parametrize("records,match", [
    ([{"instruction": "ok"}, {"instruction": ""}], r"line 2: empty instruction"),
    ([{"instruction": "ok"}, {"instruction": "   \n"}], r"line 2: empty instruction"),
    ([{"instruction": 42}], r"line 1: field 'instruction' must be a string, got int"),
    ([{"instruction": "ok", "input": ["a"]}], r"line 1: field 'input' must be a string, got list"),
    ([{"instruction": "ok", "output": {"a": 1}}], r"line 1: field 'output' must be a string, got dict"),
    ([{"prompt": "no instruction"}], r"line 1: missing field 'instruction'"),
    ([{"instruction": None}], r"line 1: field 'instruction' is null"),
    (["just a string"], r"line 1: expected an object"),
    ([{"instruction": "x", "instances": []}], r"line 1: field 'instances' must be a non-empty list"),
    ([{"instruction": "x", "instances": [{"input": 3}]}], r"line 1 instances\[0\]: field 'input' must be a string"),
])
def test_bad_records_are_rejected_with_position_and_reason(tmp_path, records, match):
    path = _jsonl(tmp_path / "bad.jsonl", records)
    with pytest.raises(SeedError, match=match) as exc:
        load_seeds(path)
    assert str(tmp_path / "bad.jsonl") in str(exc.value)
    assert "nothing was written" in str(exc.value)


def test_every_bad_record_is_listed(tmp_path):
    path = _jsonl(tmp_path / "bad.jsonl", [{"instruction": ""}] * 3 + [{"instruction": "fine"}] + [{"instruction": 1}] * 30)
    with pytest.raises(SeedError) as exc:
        load_seeds(path)
    msg = str(exc.value)
    assert "33 bad records" in msg and "... and 13 more" in msg


def test_invalid_json_line(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"instruction": "a"}\n{"instruction": "b",\n')
    with pytest.raises(SeedError, match=r"line 2: invalid JSON"):
        load_seeds(str(p))


def test_undecodable_bytes_name_the_line(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_bytes(b'{"instruction": "a"}\n{"instruction": "caf\xe9"}\n')
    with pytest.raises(SeedError, match=r"bad.jsonl: line 2 \(byte \d+\): undecodable bytes .*UTF-8"):
        load_seeds(str(p))


def test_undecodable_csv(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_bytes(b"instruction,input\nok,\n\xff\xfe,x\n")
    with pytest.raises(SeedError, match=r"bad.csv: line 3"):
        load_seeds(str(p))


def test_json_top_level_must_be_a_list(tmp_path):
    p = tmp_path / "bad.json"
    p.write_text('{"instruction": "a"}')
    with pytest.raises(SeedError, match="expected a JSON list"):
        load_seeds(str(p))


def test_json_list_positions_are_records(tmp_path):
    p = tmp_path / "bad.json"
    p.write_text(json.dumps([{"instruction": "a"}, {"instruction": "b"}, {"instruction": ""}]))
    with pytest.raises(SeedError, match="record 3: empty instruction"):
        load_seeds(str(p))


def test_unpaired_surrogate_is_rejected(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"instruction": "bad \\ud800 text"}\n')
    with pytest.raises(SeedError, match="line 1: field 'instruction' holds an unpaired surrogate"):
        load_seeds(str(p))


def test_csv_missing_column(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_text("prompt,input\nhello,\n")
    with pytest.raises(SeedError, match=r"bad.csv: missing column 'instruction' \(columns: prompt, input\)"):
        load_seeds(str(p))


def test_csv_empty_instruction_row(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_text("instruction,input\nhello,\n,some input\n")
    with pytest.raises(SeedError, match="record 2: empty instruction"):
        load_seeds(str(p))


def test_parquet_wrong_column_type(tmp_path):
    p = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"instruction": [1, 2]}), p)
    with pytest.raises(SeedError, match="column 'instruction' has type int64, expected string"):
        load_seeds(str(p))


def test_parquet_missing_column(tmp_path):
    p = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"text": ["a"]}), p)
    with pytest.raises(SeedError, match="missing column 'instruction'"):
        load_seeds(str(p))


def test_parquet_null_instruction(tmp_path):
    p = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"instruction": ["a", None]}), p)
    with pytest.raises(SeedError, match="record 2: field 'instruction' is null"):
        load_seeds(str(p))


def test_not_parquet(tmp_path):
    p = tmp_path / "bad.parquet"
    p.write_bytes(b"this is not parquet")
    with pytest.raises(SeedError, match="not a readable Parquet file"):
        load_seeds(str(p))


@pytest.mark.parametrize("name,match", [("seeds.txt", "unsupported seed format '.txt'"),
                                        ("missing.jsonl", "seed file not found")])
def test_unsupported_or_missing(tmp_path, name, match):
    p = tmp_path / name
    if name.endswith(".txt"):
        p.write_text("hello")
    with pytest.raises(SeedError, match=match):
        load_seeds(str(p))


def test_empty_file(tmp_path):
    p = tmp_path / "empty.jsonl"
    p.write_text("\n\n")
    with pytest.raises(SeedError, match="no seed instructions"):
        load_seeds(str(p))


# -- Hugging Face datasets in the local cache (a stand-in cache built here) --------------------

@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    import huggingface_hub.constants as c
    cache = tmp_path / "hub"
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / "datasets--someorg--tiny-instruct"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snap = repo / "snapshots" / commit
    (snap / "data").mkdir(parents=True)
    pq.write_table(pa.table({"instruction": ["Train one.", "Train two."], "input": ["", "x"], "output": ["a", "b"]}),
                   snap / "data" / "train-00000-of-00001.parquet")
    pq.write_table(pa.table({"instruction": ["Test one."], "input": [""], "output": ["c"]}),
                   snap / "data" / "test-00000-of-00001.parquet")
    (snap / "README.md").write_text("# card")
    return cache


def test_hf_dataset_from_local_cache(hf_cache):
    seeds = load_seeds("hf:someorg/tiny-instruct")
    assert sorted(r["instruction"] for r in seeds.rows) == ["Test one.", "Train one.", "Train two."]
    assert seeds.source.uri.startswith("hf:someorg/tiny-instruct@0123456789ab")
    train = load_seeds("hf:someorg/tiny-instruct:train")
    assert [r["instruction"] for r in train.rows] == ["Train one.", "Train two."]


def test_hf_dataset_not_cached_is_a_clear_offline_error(hf_cache):
    with pytest.raises(SeedError, match=r"hf:nobody/absent: dataset 'nobody/absent' is not in the local Hugging Face "
                                        r"cache .* and HF_HUB_OFFLINE is set"):
        load_seeds("hf:nobody/absent")


def test_hf_dataset_not_cached_is_downloaded_when_online(hf_cache, monkeypatch, tmp_path):
    """Online, a dataset missing from the cache is fetched through the hub client (a stand-in here: this
    machine has no network), and loaded from where it put the files."""
    import huggingface_hub
    import huggingface_hub.constants as c
    from huggingface_hub.errors import LocalEntryNotFoundError

    monkeypatch.setattr(c, "HF_HUB_OFFLINE", False)
    calls = []

    def snapshot_download(repo_id, *, repo_type, revision=None, local_files_only=False, allow_patterns=None):
        calls.append((repo_id, repo_type, local_files_only, allow_patterns))
        if local_files_only:
            raise LocalEntryNotFoundError("not cached")
        folder = tmp_path / "downloaded" / "abcdef"
        (folder / "data").mkdir(parents=True)
        pq.write_table(pa.table({"instruction": ["Fetched one."], "input": [""], "output": ["a"]}),
                       folder / "data" / "train.parquet")
        return str(folder)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    seeds = load_seeds("hf:tatsu-lab/alpaca")
    assert [r["instruction"] for r in seeds.rows] == ["Fetched one."]
    assert [c[2] for c in calls] == [True, False] and calls[1][:2] == ("tatsu-lab/alpaca", "dataset")
    assert "*.parquet" in calls[1][3]


def test_hf_download_failure_is_a_clear_error(hf_cache, monkeypatch):
    import huggingface_hub
    import huggingface_hub.constants as c
    from huggingface_hub.errors import LocalEntryNotFoundError

    monkeypatch.setattr(c, "HF_HUB_OFFLINE", False)

    def snapshot_download(repo_id, *, local_files_only=False, **_):
        raise LocalEntryNotFoundError("not cached") if local_files_only else ConnectionError("no route to host")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    with pytest.raises(SeedError, match="could not be downloaded .* ConnectionError: no route to host"):
        load_seeds("hf:tatsu-lab/alpaca")


def test_hf_bad_name(hf_cache):
    with pytest.raises(SeedError, match="expected hf:<org>/<name>"):
        load_seeds("hf:a/b/c")


def test_hf_unknown_split(hf_cache):
    with pytest.raises(SeedError, match="no data files .* for split 'validation'"):
        load_seeds("hf:someorg/tiny-instruct:validation")
