import json

import pyarrow.parquet as pq
import pytest

from lion_core.errors import SeedError
from lion_core.generation.dedup import dedup
from tests.lion_cli.lion_script import lion


def _files(tmp_path):
    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps({"instruction": t}) + "\n" for t in ["Write a poem about the sea.", "Explain gravity."]))
    cands = tmp_path / "cands.csv"
    cands.write_text("instruction,input\nWrite a poem about the sea now.,\nDescribe Rome.,\nDescribe Rome.,ctx\n")
    return pool, cands


def test_dedup_marks_every_candidate_in_order(tmp_path):
    pool, cands = _files(tmp_path)
    t = dedup(str(pool), str(cands)).to_pylist()
    assert [r["instruction"] for r in t] == ["Write a poem about the sea now.", "Describe Rome.", "Describe Rome."]
    assert [r["accepted"] for r in t] == [False, True, False]
    assert t[0]["most_similar"] == "Write a poem about the sea." and t[0]["most_similar_source"] == "pool"
    assert t[2]["most_similar_source"] == "candidate" and t[2]["max_rouge_l"] == 1.0 and t[2]["input"] == "ctx"


def test_dedup_bad_candidates_file(tmp_path):
    pool, _ = _files(tmp_path)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": 3}\n')
    with pytest.raises(SeedError, match="line 1"):
        dedup(str(pool), str(bad))


def test_lion_dedup_command(tmp_path):
    pool, cands = _files(tmp_path)
    out = tmp_path / "out.parquet"
    r = lion("dedup", "--against", pool, "--candidates", cands, "--out", out, "--tokenizer", "unicode")
    assert r.returncode == 0, r.stderr
    assert "1 of 3 candidates accepted" in r.stdout
    assert pq.read_table(out).column("accepted").to_pylist() == [False, True, False]
    r = lion("dedup", "--against", pool, "--candidates", cands, "--out", out)
    assert r.returncode == 1 and "exists; pass --force" in r.stderr
    bad = tmp_path / "bad.csv"
    bad.write_text("prompt\nx\n")
    out2 = tmp_path / "out2.parquet"
    r = lion("dedup", "--against", pool, "--candidates", bad, "--out", out2)
    assert r.returncode == 1 and "missing column 'instruction'" in r.stderr and not out2.exists()
