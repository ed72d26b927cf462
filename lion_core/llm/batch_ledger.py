"""The ledger of the Batch API path: each batch's row, its member requests, and the requests given back
to interactive calls, kept in the response store's own database (its SQLite file or PostgreSQL database).

It lives beside the answers rather than in a file of its own so that one copy of the store moves a run
with both its answers and the batches still owed to it; and every write is a transaction of its own, so
a process killed between two steps of a batch leaves the ledger at the last recorded step (what
`BatchRunner` resumes from). The tables and their columns are an on-disk format: existing stores must
keep opening, so change them only by adding, never by renaming.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from lion_core.database import Database, connect, is_postgres
from lion_core.llm.store_schema import LEDGER_SCHEMA as SCHEMA

if TYPE_CHECKING:
    from lion_core.llm.responses import StoredCall

LIVE = ("prepared", "uploaded", "submitted", "ended")
"""States of a batch not yet collected: its requests are claimed by it."""
ENQUEUED = ("prepared", "uploaded", "submitted")
"""States whose tokens count against the provider's enqueued-token limit (an ended batch's no longer do)."""
_CHUNK = 500  # keys per `IN (...)`: SQLite caps the parameters of one statement


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


def _placeholders(n: int) -> str:
    return ",".join("?" * n)


def _chunks(keys: Iterable[str]) -> Iterator[list[str]]:
    ks = list(keys)
    for i in range(0, len(ks), _CHUNK):
        yield ks[i:i + _CHUNK]


def live_batch_count(storage: Any, endpoint: str, model: str) -> int:
    """Batches of an endpoint and model not yet collected (0 when the store has no ledger) in the store of
    a run's `storage` config (or at a SQLite path): a role switched back to interactive collects these
    before asking anything again. A look from the flow never creates a SQLite store."""
    if isinstance(storage, str):
        location, password_env = storage, None
    else:
        location, password_env = storage.response_store_path(), storage.password_env
    if not is_postgres(location) and not os.path.exists(location):
        return 0
    db = connect(location, password_env=password_env)
    try:
        if "job" not in db.columns("batch_jobs"):  # no ledger yet
            return 0
        (n,) = db.one(f"SELECT COUNT(*) FROM batch_jobs WHERE endpoint = ? AND model = ? AND state IN "
                      f"({_placeholders(len(LIVE))})", (endpoint, model, *LIVE))
    finally:
        db.close()
    return int(n)


class BatchLedger:
    """The batch tables of one store. Jobs are plain dicts of their `batch_jobs` row."""

    def __init__(self, db: Database | str | os.PathLike):
        # A connection of its own, not the response store's (`ResponseStore.connect()`): the ledger's steps
        # must commit on their own, whatever the store has in flight.
        self._db = db if isinstance(db, Database) else connect(os.fspath(db), setup=lambda d: d.script(SCHEMA))

    def close(self) -> None:
        self._db.close()

    # -- jobs -------------------------------------------------------------------------------------------
    def record(self, job: str, call: StoredCall, input_path: str, input_sha256: str, keys: Sequence[str],
               est_tokens: int, data: str | None = None) -> dict[str, Any]:
        """A new job, `prepared`, with its members (and its input file's `data`, when the ledger keeps it);
        recording the same job again changes nothing."""
        stamp = now()
        with self._db.transaction():
            self._db.execute(
                "INSERT INTO batch_jobs (job, role, stage, endpoint, model, state, input_path, input_sha256, "
                "requests, est_tokens, created_at, updated_at) VALUES (?, ?, ?, ?, ?, 'prepared', ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (job) DO NOTHING",
                (job, call.role, call.stage, call.endpoint, call.model, input_path, input_sha256, len(keys), est_tokens,
                 stamp, stamp))
            self._db.executemany("INSERT INTO batch_members (job, key) VALUES (?, ?) ON CONFLICT (job, key) DO NOTHING",
                                 [(job, k) for k in keys])
            if data is not None:
                self._db.execute("INSERT INTO batch_inputs (job, data) VALUES (?, ?) ON CONFLICT (job) DO NOTHING",
                                 (job, data))
        return self.job(job)

    def job(self, job: str) -> dict[str, Any]:
        return self._db.dicts("SELECT * FROM batch_jobs WHERE job = ?", (job,))[0]

    def update(self, job: str, **fields: Any) -> dict[str, Any]:
        """Set columns of a job (their names are ours, never input) and return the job as it now is."""
        sets = ", ".join(f"{k} = ?" for k in fields)
        self._db.execute(f"UPDATE batch_jobs SET {sets}, updated_at = ? WHERE job = ?", (*fields.values(), now(), job))
        return self.job(job)

    def live(self, endpoint: str, model: str) -> list[dict[str, Any]]:
        """The endpoint's jobs not yet collected, oldest first."""
        return self._db.dicts(
            f"SELECT * FROM batch_jobs WHERE endpoint = ? AND model = ? AND state IN ({_placeholders(len(LIVE))}) "
            "ORDER BY created_at", (endpoint, model, *LIVE))

    def input(self, job: str) -> str:
        row = self._db.one("SELECT data FROM batch_inputs WHERE job = ?", (job,))
        if row is None:
            raise KeyError(f"batch {job}: its input file is not in the ledger")
        return row[0]

    def drop_input(self, job: str) -> None:
        self._db.execute("DELETE FROM batch_inputs WHERE job = ?", (job,))

    def members(self, job: str) -> set[str]:
        return {k for (k,) in self._db.execute("SELECT key FROM batch_members WHERE job = ?", (job,))}

    def enqueued_tokens(self, endpoint: str, model: str) -> int:
        (n,) = self._db.one(
            "SELECT COALESCE(SUM(est_tokens), 0) FROM batch_jobs WHERE endpoint = ? AND model = ? "
            f"AND state IN ({_placeholders(len(ENQUEUED))})", (endpoint, model, *ENQUEUED))
        return int(n)

    # -- keys -------------------------------------------------------------------------------------------
    def claimed(self, keys: Iterable[str]) -> set[str]:
        """Keys in a batch not yet collected."""
        out: set[str] = set()
        for chunk in _chunks(keys):
            out |= {k for (k,) in self._db.execute(
                "SELECT m.key FROM batch_members m JOIN batch_jobs j ON j.job = m.job "
                f"WHERE j.state IN ({_placeholders(len(LIVE))}) AND m.key IN ({_placeholders(len(chunk))})",
                (*LIVE, *chunk))}
        return out

    def attempts(self, keys: Iterable[str]) -> dict[str, int]:
        """Collected batches each key went through (keys in none are left out)."""
        out: dict[str, int] = {}
        for chunk in _chunks(keys):
            for key, n in self._db.execute(
                    "SELECT m.key, COUNT(*) FROM batch_members m JOIN batch_jobs j ON j.job = m.job "
                    f"WHERE j.state = 'collected' AND m.key IN ({_placeholders(len(chunk))}) GROUP BY m.key", chunk):
                out[key] = int(n)
        return out

    def mark_asked_interactively(self, keys: Iterable[str]) -> None:
        with self._db.transaction():
            self._db.executemany("INSERT INTO batch_fallback (key, asked_at) VALUES (?, ?) ON CONFLICT (key) DO NOTHING",
                                 [(k, now()) for k in keys])

    def asked_interactively(self, keys: Iterable[str]) -> set[str]:
        found: set[str] = set()
        for chunk in _chunks(keys):
            found |= {k for (k,) in self._db.execute(
                f"SELECT key FROM batch_fallback WHERE key IN ({_placeholders(len(chunk))})", chunk)}
        return found
