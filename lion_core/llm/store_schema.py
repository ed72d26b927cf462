"""The tables of a response store (answers, spend, claims, run locks) and of its batch ledger, and their
version. They are an on-disk format: existing stores must keep opening, so they change only by adding
tables and columns, never by renaming; `SCHEMA_VERSION` counts those additions, a store made by older
code is upgraded when opened and one made by newer code refused."""

from __future__ import annotations

from lion_core.database import Database, redact
from lion_core.errors import StoreError

SCHEMA = """
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
    prompt_tokens BIGINT NOT NULL DEFAULT 0,
    completion_tokens BIGINT NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL,
    error_class TEXT,
    error_message TEXT,
    truncated INTEGER NOT NULL DEFAULT 0,
    latency_s DOUBLE PRECISION,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    CHECK (status != 'ok' OR text IS NOT NULL)
);
CREATE INDEX IF NOT EXISTS responses_role_stage ON responses (role, stage, status);
CREATE TABLE IF NOT EXISTS spend (
    run TEXT NOT NULL,
    role TEXT NOT NULL,
    cost_usd DOUBLE PRECISION NOT NULL DEFAULT 0,
    paid_calls BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (run, role)
);
CREATE TABLE IF NOT EXISTS claims (
    key TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS claims_holder ON claims (holder);
CREATE TABLE IF NOT EXISTS run_locks (
    run TEXT PRIMARY KEY,
    process TEXT NOT NULL,
    flow_run TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS store_schema (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL
)
"""
SCHEMA_VERSION = 2
"""1: responses and spend (stores before versioning have no `store_schema` row and are taken as 1);
2: responses.unusable, claims, run_locks, batch_inputs, store_schema."""
# Columns added after the first release, with what older rows hold: a store made by older code gains them
# when it is opened.
_ADDED_COLUMNS = {"unusable": "INTEGER NOT NULL DEFAULT 0"}


LEDGER_SCHEMA = """
CREATE TABLE IF NOT EXISTS batch_jobs (
    job TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    stage TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    model TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('prepared', 'uploaded', 'submitted', 'ended', 'collected')),
    input_path TEXT NOT NULL,
    input_sha256 TEXT NOT NULL,
    requests INTEGER NOT NULL,
    est_tokens BIGINT NOT NULL,
    file_id TEXT,
    batch_id TEXT,
    status TEXT,
    output_file_id TEXT,
    error_file_id TEXT,
    completed INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    reason TEXT,
    tries INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS batch_members (
    job TEXT NOT NULL,
    key TEXT NOT NULL,
    PRIMARY KEY (job, key)
);
CREATE INDEX IF NOT EXISTS batch_members_key ON batch_members (key);
CREATE TABLE IF NOT EXISTS batch_inputs (
    job TEXT PRIMARY KEY,
    data TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS batch_fallback (
    key TEXT PRIMARY KEY,
    asked_at TEXT NOT NULL
)
"""
class SchemaMismatch(StoreError):
    """The store was made by a version of this code whose tables this one cannot read or upgrade."""


def set_up(db: Database) -> None:
    """Create the tables, upgrade an older store, refuse a newer one. Runs with other openers held off.
    A store of this version is left alone: `CREATE ... IF NOT EXISTS` still locks its table on PostgreSQL,
    and would make every opening wait for the writes of every worker."""
    if db.has_table("store_schema"):
        row = db.one("SELECT version FROM store_schema WHERE id = 1")
        if row and int(row[0]) == SCHEMA_VERSION:
            return
    db.script(SCHEMA)
    db.script(LEDGER_SCHEMA)
    row = db.one("SELECT version FROM store_schema WHERE id = 1")
    version = int(row[0]) if row else 1
    if version > SCHEMA_VERSION:
        raise SchemaMismatch(f"response store {redact(db.location)} has schema version {version}, newer than this "
                             f"code's {SCHEMA_VERSION}: it was written by a newer lion-distill; upgrade this one")
    if version < 1:
        raise SchemaMismatch(f"response store {redact(db.location)} has schema version {version}, older than any "
                             f"this code can upgrade (1 to {SCHEMA_VERSION})")
    have = db.columns("responses")
    for column, decl in _ADDED_COLUMNS.items():
        if column not in have:
            db.execute(f"ALTER TABLE responses ADD COLUMN {column} {decl}")
    db.execute("INSERT INTO store_schema (id, version) VALUES (1, ?) ON CONFLICT (id) DO UPDATE SET "
               "version = excluded.version", (SCHEMA_VERSION,))


