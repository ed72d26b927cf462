"""The throwaway PostgreSQL server of tests/postgres.py: a real server, with real authentication."""

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
import pytest

from tests.postgres import PostgresServer

REPO = Path(__file__).resolve().parent.parent


def _connect(url: str, password: str, **kw) -> psycopg.Connection:
    return psycopg.connect(url, password=password, connect_timeout=5, **kw)


def test_connects_with_the_password(postgres_url, postgres_server):
    assert ":" not in postgres_url.split("@")[0].removeprefix("postgresql://")  # no password in the URL
    assert os.environ["LION_STORE_PASSWORD"] == postgres_server.password
    with _connect(postgres_url, os.environ["LION_STORE_PASSWORD"]) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        assert conn.info.host == "127.0.0.1"
        assert conn.execute("SHOW fsync").fetchone() == ("off",)


def test_wrong_password_is_refused(postgres_url):
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        _connect(postgres_url, "not-the-password")


def test_each_url_is_a_fresh_empty_database(postgres_server, postgres_url):
    other = postgres_server.create_database(f"lion_test_{uuid.uuid4().hex}")
    assert other != postgres_url
    password = postgres_server.password
    with _connect(postgres_url, password, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (x int)")
        conn.execute("INSERT INTO t VALUES (1)")
    with _connect(other, password) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == (other.rsplit("/", 1)[1],)
        tables = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()
        assert tables == (0,)


def test_stop_shuts_the_server_down():
    with PostgresServer() as server:
        url, password, data = server.url("postgres"), server.password, server.dir
        with _connect(url, password) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    assert not os.path.exists(data)
    with pytest.raises(psycopg.OperationalError):
        _connect(url, password)


def test_a_killed_test_process_leaves_no_server_behind():
    # The process that started the server dies by SIGKILL: no atexit, no finalizer; the watchdog must act.
    code = (
        "import os, signal\n"
        "from tests.postgres import PostgresServer\n"
        "s = PostgresServer().start()\n"
        "print(s.url('postgres'), s.password, s.dir, flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == -signal.SIGKILL, out.stderr
    url, password, data = out.stdout.split()
    deadline = time.monotonic() + 15
    while os.path.exists(data) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not os.path.exists(data)
    with pytest.raises(psycopg.OperationalError):
        _connect(url, password)
