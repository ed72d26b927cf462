"""The durable response store: one SQLite row per request key, written the moment a response arrives.

Why SQLite (WAL mode) rather than append-only Parquet shards: a response must be on disk as soon as it
arrives, one at a time, and a resume must look up thousands of keys quickly. SQLite commits single rows
cheaply and atomically, serves point lookups by primary key, and lets several processes on one host
(parallel shard tasks) read and write the same file. Parquet would need buffering (losing the
"persist at once" rule) or one tiny file per response.

Durability: with WAL and synchronous=NORMAL a committed row survives the process being killed
(kill -9, OOM), because it is in the WAL file before commit returns; only an OS crash or power cut may
lose the last commits. `durable=True` switches to synchronous=FULL (an fsync per response).

A row is `ok` (with the text) or `failed` (error class, message, attempts, and the paid replies that
could not be used); an `ok` row is never overwritten, a `failed` row is replaced by a later success. The
`spend` table keeps what each run has paid per role, for its budget cap. The API key is never stored: the key of a
row is a hash of endpoint, model, messages and sampling parameters only.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass

from lion_core.llm.requests import ChatRequest, ChatResult

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    status TEXT NOT NULL CHECK (status IN ('ok', 'failed')),
    role TEXT NOT NULL,
    stage TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    model TEXT NOT NULL,
    request TEXT NOT NULL,
    text TEXT,
    finish_reason TEXT,
    prompt_tokens INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL,
    error_class TEXT,
    error_message TEXT,
    truncated INTEGER NOT NULL DEFAULT 0,
    latency_s REAL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    CHECK (status != 'ok' OR text IS NOT NULL)
);
CREATE INDEX IF NOT EXISTS responses_role_stage ON responses (role, stage, status);
CREATE TABLE IF NOT EXISTS spend (
    run TEXT NOT NULL,
    role TEXT NOT NULL,
    cost_usd REAL NOT NULL DEFAULT 0,
    paid_calls INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (run, role)
);
"""
# Columns added after the first release, with what older rows hold: a store made by older code gains them
# when it is opened.
_ADDED_COLUMNS = {"unusable": "INTEGER NOT NULL DEFAULT 0"}


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class StoredCall:
    """Where a response came from, for the row."""

    role: str
    stage: str
    endpoint: str
    model: str


class ResponseStore:
    def __init__(self, path: str, durable: bool = False):
        self.path = os.path.abspath(os.path.expanduser(path))
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        # Shards open the store at the same moment; on a new file, switching it to WAL and creating the
        # schema from two connections at once fails with "database is locked" at once (SQLite does not
        # wait on its busy handler there), so openings take turns, across processes too.
        with open(self.path + ".open-lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            # autocommit; each write is its own transaction. Used from one thread (the event loop).
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=60)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            self._db.execute("PRAGMA busy_timeout=60000")
            self._db.executescript(_SCHEMA)
            have = {r[1] for r in self._db.execute("PRAGMA table_info(responses)")}
            for column, decl in _ADDED_COLUMNS.items():
                if column not in have:
                    self._db.execute(f"ALTER TABLE responses ADD COLUMN {column} {decl}")

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> ResponseStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reads -------------------------------------------------------------------------------------
    def successes(self, keys: Iterable[str]) -> dict[str, ChatResult]:
        """Stored successes among `keys`, as cached results."""
        found: dict[str, ChatResult] = {}
        keys = list(dict.fromkeys(keys))
        for i in range(0, len(keys), 500):
            chunk = keys[i : i + 500]
            rows = self._db.execute(
                "SELECT key, text, finish_reason, prompt_tokens, completion_tokens, attempts, truncated "
                f"FROM responses WHERE status = 'ok' AND key IN ({','.join('?' * len(chunk))})",
                chunk,
            )
            for key, text, finish, pt, ct, attempts, truncated in rows:
                found[key] = ChatResult(
                    key=key, ok=True, text=text, finish_reason=finish, prompt_tokens=pt, completion_tokens=ct,
                    attempts=attempts, cached=True, truncated=bool(truncated),
                )
        return found

    def row(self, key: str) -> dict | None:
        cur = self._db.execute("SELECT * FROM responses WHERE key = ?", (key,))
        r = cur.fetchone()
        return dict(zip([d[0] for d in cur.description], r)) if r else None

    def counts(self) -> dict[str, int]:
        return dict(self._db.execute("SELECT status, COUNT(*) FROM responses GROUP BY status").fetchall())

    def previous_attempts(self, key: str) -> int:
        r = self._db.execute("SELECT attempts FROM responses WHERE key = ?", (key,)).fetchone()
        return int(r[0]) if r else 0

    def previous(self, key: str) -> tuple[int, int, str | None, str | None]:
        """Attempts and paid unusable replies so far, and the last failure's class and message."""
        r = self._db.execute("SELECT attempts, unusable, error_class, error_message FROM responses WHERE key = ?",
                             (key,)).fetchone()
        return (int(r[0]), int(r[1]), r[2], r[3]) if r else (0, 0, None, None)

    def spent(self, run: str) -> dict[str, float]:
        """What `run` has paid so far, per role (every paid reply, usable or not)."""
        return dict(self._db.execute("SELECT role, cost_usd FROM spend WHERE run = ?", (run,)).fetchall())

    def paid_calls(self, run: str) -> dict[str, int]:
        return dict(self._db.execute("SELECT role, paid_calls FROM spend WHERE run = ?", (run,)).fetchall())

    def grant_unusable_again(self) -> int:
        """Give every request recorded as failed for its unusable replies a fresh budget of them (`lion run
        --retry-failed`): the next run that needs one sends it again. How many there were."""
        return self._db.execute("UPDATE responses SET unusable = 0 WHERE status = 'failed' AND unusable > 0").rowcount

    def add_spend(self, run: str, role: str, cost_usd: float) -> None:
        self._db.execute(
            """INSERT INTO spend (run, role, cost_usd, paid_calls) VALUES (?, ?, ?, 1)
               ON CONFLICT(run, role) DO UPDATE SET cost_usd = cost_usd + excluded.cost_usd,
                   paid_calls = paid_calls + 1""", (run, role, cost_usd))

    # -- writes ------------------------------------------------------------------------------------
    def put_success(self, call: StoredCall, request: ChatRequest, result: ChatResult, latency_s: float) -> None:
        if result.text is None:
            raise ValueError("a success must have text")  # an empty answer is never stored as a result
        now = _now()
        self._db.execute(
            """INSERT INTO responses (key, status, role, stage, endpoint, model, request, text, finish_reason,
                   prompt_tokens, completion_tokens, attempts, truncated, latency_s, created_at, updated_at)
               VALUES (?, 'ok', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT(key) DO UPDATE SET
                   status = 'ok', text = excluded.text, finish_reason = excluded.finish_reason,
                   prompt_tokens = excluded.prompt_tokens, completion_tokens = excluded.completion_tokens,
                   attempts = excluded.attempts, truncated = excluded.truncated, latency_s = excluded.latency_s,
                   error_class = NULL, error_message = NULL, role = excluded.role, stage = excluded.stage,
                   updated_at = excluded.updated_at
               WHERE responses.status != 'ok'""",
            (result.key, call.role, call.stage, call.endpoint, call.model, _request_json(request), result.text,
             result.finish_reason, result.prompt_tokens, result.completion_tokens, result.attempts,
             int(result.truncated), latency_s, now, now),
        )

    def put_failure(self, call: StoredCall, request: ChatRequest, result: ChatResult) -> None:
        now = _now()
        self._db.execute(
            """INSERT INTO responses (key, status, role, stage, endpoint, model, request, attempts,
                   error_class, error_message, truncated, unusable, created_at, updated_at)
               VALUES (?, 'failed', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT(key) DO UPDATE SET
                   attempts = excluded.attempts, error_class = excluded.error_class,
                   error_message = excluded.error_message, truncated = excluded.truncated,
                   unusable = excluded.unusable, updated_at = excluded.updated_at
               WHERE responses.status = 'failed'""",
            (result.key, call.role, call.stage, call.endpoint, call.model, _request_json(request), result.attempts,
             result.error_class, result.error_message, int(result.truncated), result.unusable, now, now),
        )


def _request_json(request: ChatRequest) -> str:
    extra = {"draw_scope": request.draw_scope} if request.draw_scope else {}
    return json.dumps({"messages": request.api_messages(), **request.params(), "sample_index": request.sample_index,
                       **extra}, ensure_ascii=False)
