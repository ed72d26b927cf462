"""The response store's contract, on both backends (`store_location`: a SQLite file, a PostgreSQL database)."""

import multiprocessing
import sqlite3
import time

import pytest

from lion_core.errors import ConfigError
from lion_core.llm.claims import Holder
from lion_core.llm.requests import ChatRequest, ChatResult
from lion_core.llm.responses import ResponseStore, StoredCall
from lion_core.llm.store_schema import SCHEMA_VERSION, SchemaMismatch

CALL = StoredCall(role="teacher", stage="imitation", endpoint="e", model="m")
REQ = ChatRequest.of([("user", "What is 2+2?")], max_tokens=5)


def _ok(key="k1", text="4", attempts=1):
    return ChatResult(key=key, ok=True, text=text, finish_reason="stop", prompt_tokens=5, completion_tokens=1, attempts=attempts)


def _fail(key="k1", attempts=3):
    return ChatResult(key=key, ok=False, attempts=attempts, error_class="InternalServerError", error_message="boom")


def test_success_is_persisted_and_survives_reopening(store_location):
    with ResponseStore(store_location) as s:
        s.put_success(CALL, REQ, _ok(), latency_s=0.1)
    with ResponseStore(store_location) as s:
        got = s.successes(["k1", "k2"])
        assert list(got) == ["k1"]
        assert got["k1"].text == "4" and got["k1"].cached and got["k1"].finish_reason == "stop"
        row = s.row("k1")
        assert row["status"] == "ok" and row["role"] == "teacher" and '"What is 2+2?"' in row["request"]


def test_a_success_is_never_overwritten(store_location):
    with ResponseStore(store_location) as s:
        s.put_success(CALL, REQ, _ok(text="first"), latency_s=0.1)
        s.put_success(CALL, REQ, _ok(text="second"), latency_s=0.1)
        s.put_failure(CALL, REQ, _fail())
        assert s.row("k1")["text"] == "first" and s.row("k1")["status"] == "ok"


def test_failure_is_recorded_with_reason_then_replaced_by_a_success(store_location):
    with ResponseStore(store_location) as s:
        s.put_failure(CALL, REQ, _fail(attempts=3))
        row = s.row("k1")
        assert (row["status"], row["text"], row["error_class"], row["attempts"]) == ("failed", None, "InternalServerError", 3)
        assert s.successes(["k1"]) == {}
        assert s.previous_attempts("k1") == 3
        s.put_failure(CALL, REQ, _fail(attempts=6))
        assert s.row("k1")["attempts"] == 6
        s.put_success(CALL, REQ, _ok(attempts=7), latency_s=0.2)
        row = s.row("k1")
        assert (row["status"], row["text"], row["error_class"], row["attempts"]) == ("ok", "4", None, 7)
        assert s.counts() == {"ok": 1}


def test_empty_text_is_never_stored_as_a_success(store_location):
    with ResponseStore(store_location) as s:
        with pytest.raises(ValueError):
            s.put_success(CALL, REQ, ChatResult(key="k", ok=True, text=None), latency_s=0)
        assert s.counts() == {}


def test_many_keys_are_looked_up_in_chunks(store_location):
    with ResponseStore(store_location) as s:
        for i in range(1200):
            s.put_success(CALL, REQ, _ok(key=f"k{i}"), latency_s=0)
        assert len(s.successes([f"k{i}" for i in range(1500)])) == 1200


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_shards_opening_a_new_store_at_the_same_moment_all_get_it(tmp_path, backend, request):
    import threading

    errors = []
    server = request.getfixturevalue("postgres_server") if backend == "postgresql" else None
    if server:
        request.getfixturevalue("postgres_url")  # sets the password variable
    for trial in range(100 if backend == "sqlite" else 15):  # SQLite without the opening lock: 1 trial in 15 failed
        path = server.create_database(f"open_{trial}") if server else str(tmp_path / f"t{trial}" / "responses.sqlite")
        start = threading.Barrier(4)

        def open_store(start=start, path=path):
            start.wait()
            try:
                with ResponseStore(path) as s:
                    s.successes(["k"])
            except Exception as e:  # noqa: BLE001 - collected for the assertion
                errors.append(repr(e))

        threads = [threading.Thread(target=open_store) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []


def test_spend_and_unusable_budgets_are_kept_per_run(store_location):
    with ResponseStore(store_location) as s:
        s.add_spend("r1", "teacher", 0.25)
        s.add_spend("r1", "teacher", 0.5)
        s.add_spend("r1", "referee", 0.125)
        s.add_spend("r2", "teacher", 1.0)
        assert s.spent("r1") == {"teacher": 0.75, "referee": 0.125} and s.paid_calls("r1") == {"teacher": 2, "referee": 1}
        s.put_failure(CALL, REQ, ChatResult(key="k1", ok=False, attempts=2, error_class="UnusableReply",
                                            error_message="empty completion", unusable=2))
        assert s.previous("k1") == (2, 2, "UnusableReply", "empty completion")
        assert s.grant_unusable_again() == 1 and s.previous("k1")[1] == 0


def test_a_claim_is_won_by_one_holder_until_released_or_its_lease_runs_out(store_location):
    a, b = Holder.new().name, Holder.new().name
    with ResponseStore(store_location, lease_s=1.0) as s:
        assert s.claim("k1", a) and s.claim("k1", a)  # a holder may take its own claim again
        assert not s.claim("k1", b) and s.claims() == {"k1": a}
        s.release("k1", b)  # only the holder releases
        assert s.claims() == {"k1": a}
        s.release("k1", a)
        assert s.claim("k1", b) and not s.claim("k1", a)
        time.sleep(0.6)
        s.renew(b)  # renewed: still b's after its first lease would have ended
        time.sleep(0.6)
        assert not s.claim("k1", a)
        time.sleep(1.2)  # b stopped renewing (its machine is gone, say): the lease ends
        assert s.claim("k1", a) and s.claims() == {"k1": a}


def test_an_answer_and_its_claims_release_are_stored_together_or_not_at_all(store_location):
    """A worker dying between storing an answer and giving back its claim would leave a claim no one takes
    again (the key is answered, so no worker asks for it): the two are one transaction. Here the database
    refuses the release; the answer is not kept without it, and the claim stays its holder's."""
    a = Holder.new().name
    with ResponseStore(store_location) as s:
        assert s.claim("k1", a)
        if s.dialect == "sqlite":
            s._db.execute("CREATE TRIGGER no_release BEFORE DELETE ON claims BEGIN SELECT RAISE(ABORT, 'refused'); END")
        else:
            s._db.execute("CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'refused'; END $$ "
                          "LANGUAGE plpgsql")
            s._db.execute("CREATE TRIGGER no_release BEFORE DELETE ON claims FOR EACH ROW EXECUTE FUNCTION refuse()")
        with pytest.raises(Exception, match="refused"):
            s.put_success(CALL, REQ, _ok("k1"), latency_s=0.1, release=a)
        assert s.row("k1") is None and s.claims() == {"k1": a}
        s._db.execute("DROP TRIGGER no_release" + ("" if s.dialect == "sqlite" else " ON claims"))
        s.put_success(CALL, REQ, _ok("k1"), latency_s=0.1, release=a)
        assert s.successes(["k1"])["k1"].text == "4" and s.claims() == {}


def _dead_holder() -> str:
    return Holder.new().name


def test_a_claim_of_a_dead_process_on_this_machine_is_taken_at_once(store_location):
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        dead = pool.apply(_dead_holder)  # a holder whose process ends with the pool
    with ResponseStore(store_location, lease_s=3600) as s:
        assert s.claim("k1", dead)
        elsewhere = "other-host|boot|ns|4242|abc"  # on another machine: it may be alive; its lease must end
        assert s.claim("k2", elsewhere)
        me = Holder.new().name
        assert s.claim("k1", me) and not s.claim("k2", me)


def _race(location: str, keys: list[str], start, seed: int, out) -> None:
    import random

    holder = Holder.new().name
    random.Random(seed).shuffle(keys)  # each in its own order, so that they meet on many keys
    with ResponseStore(location) as s:
        start.wait(timeout=60)  # all open, then all go
        out.put([k for k in keys if s.claim(k, holder)])


def test_processes_racing_for_the_same_requests_win_each_once(store_location):
    """Decided by the database: four processes claim the same 1,000 keys at the same moment."""
    ctx = multiprocessing.get_context("spawn")
    keys = [f"k{i}" for i in range(1000)]
    out = ctx.Queue()
    start = ctx.Barrier(4)
    procs = [ctx.Process(target=_race, args=(store_location, keys, start, seed, out)) for seed in range(4)]
    for p in procs:
        p.start()
    won = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    assert sorted(k for w in won for k in w) == sorted(keys)  # every key won, by exactly one
    assert sum(1 for w in won if w) >= 2  # they did race


def test_the_schema_is_versioned_and_a_newer_store_refused(store_location):
    with ResponseStore(store_location) as s:
        assert s._db.one("SELECT version FROM store_schema")[0] == SCHEMA_VERSION
        s._db.execute("UPDATE store_schema SET version = ?", (SCHEMA_VERSION + 1,))
    with pytest.raises(SchemaMismatch, match=f"schema version {SCHEMA_VERSION + 1}, newer than this code's "
                                             f"{SCHEMA_VERSION}.*upgrade"):
        ResponseStore(store_location)


def test_a_store_from_before_versioning_is_upgraded_in_place(tmp_path):
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)  # the tables as the first release wrote them
    db.executescript("""CREATE TABLE responses (key TEXT PRIMARY KEY, status TEXT NOT NULL, role TEXT NOT NULL,
        stage TEXT NOT NULL, endpoint TEXT NOT NULL, model TEXT NOT NULL, request TEXT NOT NULL, text TEXT,
        finish_reason TEXT, prompt_tokens INTEGER NOT NULL DEFAULT 0, completion_tokens INTEGER NOT NULL DEFAULT 0,
        attempts INTEGER NOT NULL, error_class TEXT, error_message TEXT, truncated INTEGER NOT NULL DEFAULT 0,
        latency_s REAL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL);
        INSERT INTO responses VALUES ('k1', 'ok', 'teacher', 'imitation', 'e', 'm', '{}', 'old answer', 'stop', 1, 1, 1,
        NULL, NULL, 0, 0.1, 'then', 'then');""")
    db.close()
    with ResponseStore(str(path)) as s:
        assert s.successes(["k1"])["k1"].text == "old answer" and s.previous("k1")[1] == 0
        assert s._db.one("SELECT version FROM store_schema")[0] == SCHEMA_VERSION


def test_a_postgresql_store_needs_its_password(postgres_url, monkeypatch):
    monkeypatch.delenv("LION_STORE_PASSWORD")
    with pytest.raises(ConfigError, match="LION_STORE_PASSWORD .*not set"):
        ResponseStore(postgres_url)
    monkeypatch.setenv("LION_STORE_PASSWORD", "wrong-password")
    with pytest.raises(Exception, match="cannot connect: .*password authentication failed") as err:
        ResponseStore(postgres_url)
    assert "wrong-password" not in str(err.value)
