"""The database under the response store and the batch ledger: a local SQLite file, or a PostgreSQL server
that workers on several machines share.

Both speak the same SQL here: statements are written with `?` placeholders and the upsert forms both accept
(`ON CONFLICT ... DO UPDATE/NOTHING`, `excluded.`), and `{now}` in a statement is the database's own clock in
seconds since the epoch, so leases agree across machines whose clocks do not.

The password of a PostgreSQL store never appears in its URL, the config or a log: it is read from an
environment variable when the connection opens (a Prefect Secret block is copied there at the start of a
flow, see `lion_prefect.secrets`).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

from lion_core.errors import ConfigError, LionError

POSTGRES_SCHEMES = ("postgresql", "postgres")


class StoreUnavailable(LionError):
    """The store's database could not be opened (server down, wrong password, no such database)."""


def is_postgres(location: str) -> bool:
    return location.split("://", 1)[0].lower() in POSTGRES_SCHEMES and "://" in location


def _userinfo(url: str) -> tuple[str, str, str] | None:
    """(scheme, user info, the rest) of a URL with an `@`, split at the last `@` (a generated password may
    hold `/`, `#`, `?` or `@`, which a URL parser would take for the path)."""
    scheme, sep, rest = url.partition("://")
    at = rest.rfind("@")
    return (scheme, rest[:at], rest[at + 1:]) if sep and at >= 0 else None


def check_postgres_url(url: str, field: str = "storage.response_store") -> str:
    """The URL as given when it names a host and a database and carries no password; else a ConfigError
    naming `field` (and never echoing a password)."""
    split = _userinfo(url)
    if split and ":" in split[1]:
        raise ConfigError(f"{field}: the URL carries a password; remove it and set storage.password_env (an environment "
                          "variable) or storage.password_secret (a Prefect Secret block) instead")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        raise ConfigError(f"{field}: {redact(url)} is not a valid PostgreSQL URL (its port?); expected "
                          "postgresql://user@host:5432/database") from None
    if not parts.hostname:
        raise ConfigError(f"{field}: {redact(url)} names no host; expected postgresql://user@host:5432/database")
    if not parts.path.strip("/") or "/" in parts.path.strip("/"):
        raise ConfigError(f"{field}: {redact(url)} names no database; expected postgresql://user@host:5432/database")
    if parts.query or parts.fragment:
        raise ConfigError(f"{field}: {redact(url)}: query parameters are not supported (set them on the server or "
                          "in PG* environment variables)")
    return url


def redact(url: str) -> str:
    """The URL with any password replaced, for messages: everything between the user's name and the last `@`."""
    split = _userinfo(url)
    if not split or ":" not in split[1]:
        return url
    scheme, info, rest = split
    return f"{scheme}://{info.split(':', 1)[0]}:***@{rest}"


class Database:
    """One connection, used from one thread at a time. Every statement commits on its own unless it runs
    inside `transaction()`."""

    def __init__(self, conn: Any, dialect: str, location: str):
        self._conn, self.dialect, self.location = conn, dialect, location
        self.now = ("(julianday('now') - 2440587.5) * 86400.0" if dialect == "sqlite"
                    else "EXTRACT(EPOCH FROM clock_timestamp())")

    def _sql(self, sql: str) -> str:
        sql = sql.replace("{now}", self.now)
        return sql if self.dialect == "sqlite" else sql.replace("?", "%s")

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        if self.dialect == "sqlite":
            return self._conn.execute(self._sql(sql), params)
        return self._conn.execute(self._sql(sql), params or None)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if self.dialect == "sqlite":
            self._conn.executemany(self._sql(sql), rows)
        elif rows:
            with self._conn.cursor() as cur:
                cur.executemany(self._sql(sql), rows)

    def one(self, sql: str, params: Sequence[Any] = ()) -> tuple | None:
        return self.execute(sql, params).fetchone()

    def dicts(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        cur = self.execute(sql, params)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r)) for r in cur.fetchall()]

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        if self.dialect == "sqlite":
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")
        else:
            with self._conn.transaction():
                yield

    def script(self, statements: str) -> None:
        """DDL, one statement per `;`."""
        for stmt in filter(None, (s.strip() for s in statements.split(";"))):
            self.execute(stmt)

    def has_table(self, table: str) -> bool:
        if self.dialect == "sqlite":
            return self.one("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)) is not None
        return bool(self.one("SELECT to_regclass(?) IS NOT NULL", (table,))[0])

    def columns(self, table: str) -> set[str]:
        if self.dialect == "sqlite":
            return {r[1] for r in self._conn.execute(f"PRAGMA table_info({table})")}
        return {r[0] for r in self.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
            "AND table_name = ?", (table,))}

    def close(self) -> None:
        self._conn.close()


def password(env_var: str | None, environ: Mapping[str, str] = os.environ) -> str | None:
    """The store's password from `env_var` (None: no password, for trust, peer or .pgpass authentication)."""
    if env_var is None:
        return None
    value = environ.get(env_var, "")
    if not value:
        raise ConfigError(f"storage.password_env: environment variable {env_var} (the response store's password) is "
                          "not set or empty; set it, or name a Prefect Secret block in storage.password_secret")
    return value


def connect(location: str, *, durable: bool = False, password_env: str | None = "LION_STORE_PASSWORD",
            setup: Callable[[Database], None] | None = None, environ: Mapping[str, str] = os.environ) -> Database:
    """Open the store at `location` (a file path, or a postgresql:// URL whose password is in `password_env`)
    and run `setup` (creating or checking the schema) with other processes opening it at the same moment
    waiting their turn.

    `durable` asks for every commit to reach the disk before it returns. Without it a commit survives the
    writing process being killed (SQLite's WAL; PostgreSQL's server holds it) and only a crash of the
    machine or server may lose the last ones."""
    if is_postgres(location):
        return _connect_postgres(location, durable, password(password_env, environ), setup)
    path = os.path.abspath(os.path.expanduser(location))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    # On a new file, switching to WAL and creating the schema from two connections at once fails with
    # "database is locked" at once (SQLite does not wait on its busy handler there): openings take turns.
    with open(path + ".open-lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        # autocommit (isolation_level=None): each statement is its own transaction unless in `transaction()`
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=60)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        conn.execute("PRAGMA busy_timeout=60000")
        db = Database(conn, "sqlite", path)
        _set_up(db, setup)
    return db


def _set_up(db: Database, setup: Callable[[Database], None] | None) -> None:
    if setup is None:
        return
    try:
        with db.transaction():
            if db.dialect == "postgresql":
                # concurrent CREATE ... IF NOT EXISTS of one table can fail in PostgreSQL's catalogue: serialise
                db.execute("SELECT pg_advisory_xact_lock(7218304521)")
                db.execute("SET LOCAL lock_timeout = '60s'")  # an upgrade waits for writers, not forever
            setup(db)
    except BaseException:
        db.close()
        raise


def _connect_postgres(url: str, durable: bool, pw: str | None, setup: Callable[[Database], None] | None) -> Database:
    try:
        import psycopg
    except ImportError:  # pragma: no cover - installed with the project's postgres extra
        raise ConfigError("storage.response_store is a PostgreSQL URL but psycopg is not installed: "
                          "pip install 'lion-distill[postgres]'") from None
    parts = urlsplit(check_postgres_url(url))
    kwargs: dict[str, Any] = {"host": parts.hostname, "port": parts.port or 5432, "dbname": parts.path.strip("/"),
                              "autocommit": True, "connect_timeout": 30, "application_name": "lion",
                              # a dead peer or a dropped idle connection (the run's lock is held on one) is
                              # noticed in about a minute instead of the kernel's two hours
                              "keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10, "keepalives_count": 3}
    if parts.username:
        kwargs["user"] = unquote(parts.username)
    if pw is not None:
        kwargs["password"] = pw
    try:
        conn = psycopg.connect(**kwargs)
    except psycopg.OperationalError as err:
        message = str(err).replace(pw, "***") if pw else str(err)
        raise StoreUnavailable(f"response store {redact(url)}: cannot connect: {message.strip()}") from None
    if not durable:
        # the same promise as SQLite's default: a commit outlives the writer, not a crash of the server
        conn.execute("SET synchronous_commit = off")
    db = Database(conn, "postgresql", url)
    _set_up(db, setup)
    return db
