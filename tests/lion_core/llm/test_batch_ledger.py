"""The batch ledger on its own: what a resume reads back from the store's file, without any provider."""

import sqlite3

import pytest

from lion_core.llm.batch_ledger import BatchLedger, live_batch_count
from lion_core.llm.responses import ResponseStore, StoredCall

CALL = StoredCall(role="teacher", stage="imitation", endpoint="http://ep", model="m")

# The on-disk format existing response stores carry: a column renamed or dropped here strands their batches.
COLUMNS = {
    "batch_jobs": ["job", "role", "stage", "endpoint", "model", "state", "input_path", "input_sha256", "requests",
                   "est_tokens", "file_id", "batch_id", "status", "output_file_id", "error_file_id", "completed",
                   "failed", "reason", "tries", "created_at", "updated_at"],
    "batch_members": ["job", "key"],
    "batch_fallback": ["key", "asked_at"],
}


def test_the_tables_keep_their_on_disk_columns(tmp_path):
    BatchLedger(tmp_path / "r.sqlite").close()
    db = sqlite3.connect(tmp_path / "r.sqlite")
    try:
        for table, columns in COLUMNS.items():
            assert [row[1] for row in db.execute(f"PRAGMA table_info({table})")] == columns
    finally:
        db.close()


def _ledger(location: str) -> BatchLedger:
    """The ledger of the store at `location`, on a connection of its own, as BatchRunner opens it."""
    with ResponseStore(location) as store:
        return BatchLedger(store.connect())


def test_jobs_members_and_fallbacks_survive_reopening_the_store(store_location):
    ledger = _ledger(store_location)
    job = ledger.record("j1", CALL, "/in/j1.jsonl", "abc", ["k1", "k2"], est_tokens=40)
    assert (job["state"], job["requests"], job["est_tokens"], job["tries"]) == ("prepared", 2, 40, 0)
    assert ledger.record("j1", CALL, "/other", "def", ["k3"], est_tokens=1)["input_path"] == "/in/j1.jsonl"  # idempotent
    ledger.update("j1", state="uploaded", file_id="file-1")
    ledger.record("j2", CALL, "/in/j2.jsonl", "ghi", ["k3"], est_tokens=5)
    ledger.mark_asked_interactively(["k9"])
    ledger.record("j3", CALL, "ledger:j3.jsonl", "jkl", ["k4"], est_tokens=1, data='{"custom_id": "k4"}\n')
    ledger.close()

    ledger = _ledger(store_location)
    try:
        assert ledger.job("j1")["file_id"] == "file-1" and ledger.job("j1")["state"] == "uploaded"
        assert ledger.members("j1") == {"k1", "k2", "k3"}  # the second record of j1 added its member, nothing else
        assert [j["job"] for j in ledger.live("http://ep", "m")] == ["j1", "j2", "j3"]
        assert ledger.live("http://ep", "other-model") == []
        assert ledger.enqueued_tokens("http://ep", "m") == 46
        assert ledger.asked_interactively(["k9", "k1"]) == {"k9"}
        assert ledger.input("j3") == '{"custom_id": "k4"}\n'  # kept in the store: another machine can upload it
        ledger.drop_input("j3")
        with pytest.raises(KeyError, match="j3"):
            ledger.input("j3")
    finally:
        ledger.close()


def test_claims_end_and_attempts_count_once_a_batch_is_collected(store_location):
    ledger = _ledger(store_location)
    try:
        ledger.record("j1", CALL, "/in/j1.jsonl", "abc", ["k1", "k2"], est_tokens=10)
        assert ledger.claimed(["k1", "k2", "k3"]) == {"k1", "k2"} and ledger.attempts(["k1"]) == {}
        ledger.update("j1", state="ended", status="completed")
        assert ledger.enqueued_tokens("http://ep", "m") == 0  # an ended batch no longer counts against the cap
        assert ledger.claimed(["k1"]) == {"k1"}  # still owed its collection
        ledger.update("j1", state="collected")
        ledger.record("j2", CALL, "/in/j2.jsonl", "def", ["k1"], est_tokens=10)
        ledger.update("j2", state="collected")
        assert ledger.claimed(["k1", "k2"]) == set() and ledger.attempts(["k1", "k2", "k3"]) == {"k1": 2, "k2": 1}
        many = [f"x{i}" for i in range(1200)]  # more keys than one statement takes
        ledger.record("j3", CALL, "/in/j3.jsonl", "ghi", many, est_tokens=1)
        assert ledger.claimed(many) == set(many)
    finally:
        ledger.close()


def test_live_batch_count_reads_without_creating_anything(tmp_path):
    path = tmp_path / "r.sqlite"
    assert live_batch_count(str(path), "http://ep", "m") == 0 and not path.exists()
    sqlite3.connect(path).close()  # a store with no ledger yet
    assert live_batch_count(str(path), "http://ep", "m") == 0
    ledger = BatchLedger(path)
    ledger.record("j1", CALL, "/in/j1.jsonl", "abc", ["k1"], est_tokens=1)
    ledger.record("j2", CALL, "/in/j2.jsonl", "abc", ["k2"], est_tokens=1)
    ledger.update("j2", state="collected")
    ledger.close()
    assert live_batch_count(str(path), "http://ep", "m") == 1
