"""The durable response store: one row per request key, written the moment a response arrives, in a local
SQLite file (the default) or a PostgreSQL database that workers on several machines share
(lion_core.database).

Why a database rather than append-only Parquet shards: a response must be durable as soon as it arrives,
one at a time, and a resume must look up thousands of keys quickly. Both databases commit single rows
cheaply and atomically, serve point lookups by primary key, and let several processes read and write the
same store (SQLite on one host, PostgreSQL from anywhere). Parquet would need buffering (losing the
"persist at once" rule) or one tiny file per response.

Durability: a committed row survives the writing process being killed (kill -9, OOM); only a crash of the
machine (SQLite) or of the database server (PostgreSQL) may lose the last commits. `durable=True` makes
each commit wait for the disk.

A row is `ok` (with the text) or `failed` (error class, message, attempts, and the paid replies that
could not be used); an `ok` row is never overwritten, a `failed` row is replaced by a later success. A
request in flight is claimed (lion_core.llm.claims), so workers racing for it send it once. The `spend`
table keeps what each run has paid per role, for its budget cap. The API key is never stored: the key of a
row is a hash of endpoint, model, messages and sampling parameters only.

The tables are an on-disk format with a version (`store_schema`): a store made by older code is upgraded
when opened (columns and tables are only ever added); one made by newer code is refused.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from lion_core.database import Database, connect, is_postgres
from lion_core.llm.claims import known_dead
from lion_core.llm.requests import ChatRequest, ChatResult
from lion_core.llm.store_schema import set_up


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


Previous = tuple[int, int, "str | None", "str | None"]
"""What the store holds of a request's earlier tries: attempts, paid unusable replies, the last failure's
class and message."""


@dataclass(frozen=True)
class StoredCall:
    """Where a response came from, for the row."""

    role: str
    stage: str
    endpoint: str
    model: str


class Write(NamedTuple):
    """One row for `write_many`: kind 'ok' (an answer, with its latency) or 'failed'; `release`: give back
    the writer's claim on the key with it."""

    kind: str
    call: StoredCall
    request: ChatRequest
    result: ChatResult
    latency_s: float | None = None
    release: bool = True


class ResponseStore:
    """`location` is a file path (SQLite) or a postgresql:// URL (the password in `password_env`).
    `lease_s`: how long a claim outlives its last renewal (a dead holder's requests wait that long)."""

    def __init__(self, location: str, durable: bool = False, *, password_env: str | None = "LION_STORE_PASSWORD",
                 lease_s: float = 60.0):
        self._open = (location, durable, password_env)
        self._db = connect(location, durable=durable, password_env=password_env, setup=set_up)
        self.location = self._db.location
        self.path: str | None = None if is_postgres(location) else self.location
        """The SQLite file, or None on PostgreSQL."""
        self.lease_s = lease_s

    @property
    def reopen(self) -> dict[str, Any]:
        """How to open this store again in another process: `ResponseStore(**store.reopen)` (the password
        is read from the environment there too, never passed along)."""
        location, durable, password_env = self._open
        return {"location": location, "durable": durable, "password_env": password_env, "lease_s": self.lease_s}

    @classmethod
    def open(cls, storage: Any) -> ResponseStore:
        """The store a run's `storage` config names."""
        return cls(storage.response_store_path(), password_env=storage.password_env, lease_s=storage.claim_lease_s)

    def connect(self, setup: Any = None) -> Database:
        """A connection of its own to the same database (the batch ledger's steps commit on their own)."""
        location, durable, password_env = self._open
        return connect(location, durable=durable, password_env=password_env, setup=setup)

    @property
    def dialect(self) -> str:
        return self._db.dialect

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
        rows = self._db.dicts("SELECT * FROM responses WHERE key = ?", (key,))
        return rows[0] if rows else None

    def counts(self) -> dict[str, int]:
        return {k: int(n) for k, n in self._db.execute("SELECT status, COUNT(*) FROM responses GROUP BY status")}

    def lookup_many(self, keys: Iterable[str]) -> dict[str, tuple[ChatResult | None, Previous]]:
        """One read for requests about to be sent: for each key the store knows, its answer (None: none
        yet) and what `previous` returns."""
        out: dict[str, tuple[ChatResult | None, Previous]] = {}
        keys = list(keys)
        for i in range(0, len(keys), 500):
            chunk = list(keys[i:i + 500])
            for row in self._db.execute(
                    "SELECT key, status, text, finish_reason, prompt_tokens, completion_tokens, attempts, truncated, "
                    f"unusable, error_class, error_message FROM responses WHERE key IN ({','.join('?' * len(chunk))})",
                    chunk):
                key, status, text, finish, pt, ct, attempts, truncated, unusable, error_class, error_message = row
                found = ChatResult(key=key, ok=True, text=text, finish_reason=finish, prompt_tokens=pt,
                                   completion_tokens=ct, attempts=attempts, cached=True,
                                   truncated=bool(truncated)) if status == "ok" else None
                out[key] = (found, (int(attempts), int(unusable), None if found else error_class,
                                    None if found else error_message))
        return out

    def previous_attempts(self, key: str) -> int:
        r = self._db.one("SELECT attempts FROM responses WHERE key = ?", (key,))
        return int(r[0]) if r else 0

    def previous(self, key: str) -> tuple[int, int, str | None, str | None]:
        """Attempts and paid unusable replies so far, and the last failure's class and message."""
        r = self._db.one("SELECT attempts, unusable, error_class, error_message FROM responses WHERE key = ?", (key,))
        return (int(r[0]), int(r[1]), r[2], r[3]) if r else (0, 0, None, None)

    def spent(self, run: str) -> dict[str, float]:
        """What `run` has paid so far, per role (every paid reply, usable or not)."""
        return {r: float(c) for r, c in self._db.execute("SELECT role, cost_usd FROM spend WHERE run = ?", (run,))}

    def paid_calls(self, run: str) -> dict[str, int]:
        return {r: int(n) for r, n in self._db.execute("SELECT role, paid_calls FROM spend WHERE run = ?", (run,))}

    def grant_unusable_again(self) -> int:
        """Give every request recorded as failed for its unusable replies a fresh budget of them (`lion run
        --retry-failed`): the next run that needs one sends it again. How many there were."""
        return self._db.execute("UPDATE responses SET unusable = 0 WHERE status = 'failed' AND unusable > 0").rowcount

    def add_spend(self, run: str, role: str, cost_usd: float) -> None:
        self._db.execute(
            """INSERT INTO spend (run, role, cost_usd, paid_calls) VALUES (?, ?, ?, 1)
               ON CONFLICT (run, role) DO UPDATE SET cost_usd = spend.cost_usd + excluded.cost_usd,
                   paid_calls = spend.paid_calls + 1""", (run, role, cost_usd))

    # -- claims ------------------------------------------------------------------------------------
    def claim(self, key: str, holder: str) -> bool:
        """Take `key` for `holder` until the lease runs out (renewed by `renew`); False while another live
        holder has it. Two holders racing for a free key: the database lets one of them win."""
        for _ in range(3):
            if self._db.execute(_CLAIM, (key, holder, self.lease_s)).rowcount:
                return True
            row = self._db.one("SELECT holder FROM claims WHERE key = ?", (key,))
            if row is not None:
                break
        else:  # released and taken again in turn, three times: busy elsewhere
            return False
        if known_dead(row[0]):  # its process on this machine is gone: no need to wait for the lease
            return bool(self._db.execute("UPDATE claims SET holder = ?, expires = {now} + ? WHERE key = ? AND holder = ?",
                                         (holder, self.lease_s, key, row[0])).rowcount)
        return False

    def claim_many(self, keys: Sequence[str], holder: str) -> set[str]:
        """`claim` for several keys: those `holder` now has."""
        keys = list(dict.fromkeys(keys))  # PostgreSQL refuses a key twice in one upsert
        if self.dialect == "postgresql":
            won = {k for (k,) in self._db.execute(
                """INSERT INTO claims (key, holder, expires) SELECT k, ?, {now} + ? FROM unnest(?::text[]) AS k
                   ON CONFLICT (key) DO UPDATE SET holder = excluded.holder, expires = excluded.expires
                   WHERE claims.expires < {now} OR claims.holder = excluded.holder RETURNING key""",
                (holder, self.lease_s, list(keys)))}
        else:
            with self._db.transaction():
                won = {k for k in keys if self._db.execute(_CLAIM, (k, holder, self.lease_s)).rowcount}
        return won | {k for k in keys if k not in won and self.claim(k, holder)}  # a dead holder's, or just released

    def release_all(self, holder: str) -> None:
        self._db.execute("DELETE FROM claims WHERE holder = ?", (holder,))

    def renew(self, holder: str) -> None:
        """Extend every claim of `holder` by a lease (its requests are still in flight)."""
        self._db.execute("UPDATE claims SET expires = {now} + ? WHERE holder = ?", (self.lease_s, holder))

    def release(self, key: str, holder: str) -> None:
        self._db.execute("DELETE FROM claims WHERE key = ? AND holder = ?", (key, holder))

    def claims(self) -> dict[str, str]:
        """Keys claimed now (live or not), with their holders."""
        return dict(self._db.execute("SELECT key, holder FROM claims"))

    def hold_run(self, run: str, process: str, flow_run: str) -> tuple[bool, str | None]:
        """PostgreSQL: take the run's lock for as long as this connection lives (the server drops it when
        the process dies, wherever it ran). (True, the flow run that held it last) or (False, its holder now)."""
        if self.dialect != "postgresql":
            raise NotImplementedError("a SQLite store's runs are locked by a file beside it (lion_core.runs)")
        (taken,) = self._db.one("SELECT pg_try_advisory_lock(hashtext('lion run ' || ?))", (run,))
        row = self._db.one("SELECT process, flow_run FROM run_locks WHERE run = ?", (run,))
        if not taken:
            return False, f"{row[0]}, flow run {row[1]}" if row else "another process"
        self._db.execute("INSERT INTO run_locks (run, process, flow_run) VALUES (?, ?, ?) ON CONFLICT (run) DO UPDATE "
                         "SET process = excluded.process, flow_run = excluded.flow_run", (run, process, flow_run))
        return True, row[1] if row else None

    def run_holder(self, run: str) -> str | None:
        """PostgreSQL: the process holding the run's lock now (`hold_run`), None when none does."""
        # a one-key advisory lock shows as its key's high and low halves, in this database only
        row = self._db.one(
            "SELECT 1 FROM pg_locks, (SELECT hashtext('lion run ' || ?)::bigint AS h) AS k "
            "WHERE locktype = 'advisory' AND granted AND objsubid = 1 "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
            "AND classid = ((k.h >> 32) & 4294967295)::oid AND objid = (k.h & 4294967295)::oid", (run,))
        if row is None:
            return None
        held = self._db.one("SELECT process FROM run_locks WHERE run = ?", (run,))
        return held[0] if held else "another process"

    # -- writes ------------------------------------------------------------------------------------
    def put_success(self, call: StoredCall, request: ChatRequest, result: ChatResult, latency_s: float,
                    release: str | None = None) -> None:
        """Store an answer (never over another answer); `release`: the holder whose claim it ends."""
        self.write_many([Write("ok", call, request, result, latency_s, release is not None)], release or "")

    def put_failure(self, call: StoredCall, request: ChatRequest, result: ChatResult, release: str | None = None) -> None:
        self.write_many([Write("failed", call, request, result, None, release is not None)], release or "")

    def write_many(self, writes: Sequence[Write], holder: str) -> None:
        """Answers and failures, then the claims of `holder` on the keys whose `release` is set, in one
        transaction: a worker killed between an answer and its release must not leave a claim that no one
        will take (the answer is there, so no worker asks for the key again). Answers go before releases, so
        that a worker that takes a released claim finds the answer."""
        now = _now()
        ok, failed = [], []
        for w in writes:
            r = w.result
            if w.kind == "ok":
                if r.text is None:
                    raise ValueError("a success must have text")  # an empty answer is never stored as a result
                ok.append((r.key, w.call.role, w.call.stage, w.call.endpoint, w.call.model, _request_json(w.request),
                           _text(r.text), r.finish_reason, r.prompt_tokens, r.completion_tokens, r.attempts, int(r.truncated),
                           w.latency_s, now, now))
            else:
                failed.append((r.key, w.call.role, w.call.stage, w.call.endpoint, w.call.model, _request_json(w.request),
                               r.attempts, r.error_class, _text(r.error_message), int(r.truncated), r.unusable, now, now))
        statements = []  # one statement per kind for the whole group: a round trip, not one per row
        for (head, row, tail), rows in ((_PUT_SUCCESS, ok), (_PUT_FAILURE, failed)):
            for i in range(0, len(rows), 60):  # 60 rows x 15 values: within SQLite's oldest limit of 999
                part = list({r[0]: r for r in rows[i:i + 60]}.values())  # a key once per statement
                statements.append((head + ", ".join([row] * len(part)) + tail, [v for r in part for v in r]))
        released = [w.result.key for w in writes if w.release]
        for i in range(0, len(released), 500):
            part = released[i:i + 500]
            statements.append((f"DELETE FROM claims WHERE holder = ? AND key IN ({','.join('?' * len(part))})",
                               (holder, *part)))
        with self._db.transaction() if len(statements) > 1 else contextlib.nullcontext():
            for sql, params in statements:
                self._db.execute(sql, params)


_CLAIM = """INSERT INTO claims (key, holder, expires) VALUES (?, ?, {now} + ?)
    ON CONFLICT (key) DO UPDATE SET holder = excluded.holder, expires = excluded.expires
    WHERE claims.expires < {now} OR claims.holder = excluded.holder"""
_PUT_SUCCESS = ("""INSERT INTO responses (key, status, role, stage, endpoint, model, request, text, finish_reason,
        prompt_tokens, completion_tokens, attempts, truncated, latency_s, created_at, updated_at) VALUES """,
                "(?, 'ok', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", """
    ON CONFLICT (key) DO UPDATE SET
        status = 'ok', text = excluded.text, finish_reason = excluded.finish_reason,
        prompt_tokens = excluded.prompt_tokens, completion_tokens = excluded.completion_tokens,
        attempts = excluded.attempts, truncated = excluded.truncated, latency_s = excluded.latency_s,
        error_class = NULL, error_message = NULL, role = excluded.role, stage = excluded.stage,
        updated_at = excluded.updated_at
    WHERE responses.status != 'ok'""")
_PUT_FAILURE = ("""INSERT INTO responses (key, status, role, stage, endpoint, model, request, attempts,
        error_class, error_message, truncated, unusable, created_at, updated_at) VALUES """,
                "(?, 'failed', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", """
    ON CONFLICT (key) DO UPDATE SET
        attempts = excluded.attempts, error_class = excluded.error_class,
        error_message = excluded.error_message, truncated = excluded.truncated,
        unusable = excluded.unusable, updated_at = excluded.updated_at
    WHERE responses.status = 'failed'""")
"""A failure never overwrites an answer; an answer replaces a failure."""


def _text(text: str | None) -> str | None:
    """A reply as both databases can keep it: PostgreSQL's text refuses NUL, which no model means to send."""
    return text.replace("\x00", "\ufffd") if text and "\x00" in text else text


def _request_json(request: ChatRequest) -> str:
    extra = {"draw_scope": request.draw_scope} if request.draw_scope else {}
    return json.dumps({"messages": request.api_messages(), **request.params(), "sample_index": request.sample_index,
                       **extra}, ensure_ascii=False)
