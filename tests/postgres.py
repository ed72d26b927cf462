"""A real, throwaway PostgreSQL server for the tests and benchmarks: its own cluster in a temp dir, on
loopback and a free port, gone when stopped. Fixtures: `postgres_server` (one per test process, i.e. per
xdist worker, started by the first test that asks) and `postgres_url` (a fresh database per test; the
password goes in LION_STORE_PASSWORD, as a user would set it, never in the URL)."""

from __future__ import annotations

import atexit
import glob
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
import uuid

import pytest

USER = "lion"
INSTALL_HINT = "install PostgreSQL's server, e.g. `apt-get install postgresql` (Debian/Ubuntu), or put its bin directory on PATH"
_TOOLS = ("initdb", "pg_ctl", "postgres")

# A crash (SIGKILL, OOM, a CI timeout) skips atexit and fixture finalizers. This watchdog, in its own
# session so terminal signals and group kills miss it, waits for EOF on a pipe only the test process holds
# (EOF means that process is gone, however it died), then shuts the postmaster down and removes the dir.
_WATCHDOG = """read -r _
kill -INT "$1" 2>/dev/null
i=0; while kill -0 "$1" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
kill -KILL "$1" 2>/dev/null
rm -rf "$2"
"""


class PostgresNotFound(RuntimeError):
    pass


def find_postgres_bin() -> str:
    """The directory holding initdb, pg_ctl and postgres."""
    candidates = []
    try:  # pg_config may come from libpq-dev alone, so its bindir is checked like any other
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, timeout=10)
        if out.returncode == 0:
            candidates.append(out.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        pass

    def version(d: str) -> tuple[int, ...]:
        v = os.path.basename(os.path.dirname(d))
        return tuple(int(p) for p in v.split(".")) if v.replace(".", "").isdigit() else (0,)

    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True)
    if initdb := shutil.which("initdb"):
        # A lone symlink (e.g. /usr/local/bin/initdb): its target's dir has the other tools.
        candidates += [os.path.dirname(initdb), os.path.dirname(os.path.realpath(initdb))]
    for d in candidates:
        if d and all(os.access(os.path.join(d, t), os.X_OK) for t in _TOOLS):
            return d
    raise PostgresNotFound(f"PostgreSQL server binaries ({', '.join(_TOOLS)}) not found via pg_config, "
                           f"/usr/lib/postgresql/*/bin or PATH: {INSTALL_HINT}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    def __init__(self, fast: bool = True):
        self.fast = fast
        self.host = "127.0.0.1"
        self.port: int | None = None
        self.user = USER
        self.password = secrets.token_urlsafe(24)
        self.dir: str | None = None
        self._proc: subprocess.Popen | None = None
        self._watchdog: subprocess.Popen | None = None

    def _run_kwargs(self) -> dict:
        # initdb and postgres refuse to run as root: as root, run them as the `postgres` user, without
        # root's groups. PG* variables of the caller's environment must not steer our cluster.
        kw = {"cwd": self.dir, "env": {k: v for k, v in os.environ.items() if not k.startswith("PG")}}
        if os.geteuid() == 0:
            kw.update(user="postgres", group="postgres", extra_groups=[])
        return kw

    def start(self) -> PostgresServer:
        bindir = find_postgres_bin()
        root = os.geteuid() == 0
        # Root's TMPDIR may be private (e.g. under /root); the postgres user must reach the dir.
        self.dir = tempfile.mkdtemp(prefix="lion-pg-", dir="/tmp" if root else None)
        atexit.register(self.stop)
        try:
            self._start(bindir, root)
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, bindir: str, root: bool) -> None:
        data, pwfile = os.path.join(self.dir, "data"), os.path.join(self.dir, "pw")
        with open(os.open(pwfile, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
            f.write(self.password + "\n")
        if root:
            for path in (self.dir, pwfile):
                shutil.chown(path, "postgres", "postgres")
        initdb = [f"{bindir}/initdb", "-D", data, "-U", self.user, f"--pwfile={pwfile}", "--auth=scram-sha-256",
                  "-E", "UTF8", "--locale=C"]
        if self.fast:
            initdb.append("--no-sync")  # a benchmark (fast=False) should not meet initdb's writeback mid-run
        res = subprocess.run(initdb, capture_output=True, text=True, **self._run_kwargs())
        os.unlink(pwfile)
        if res.returncode != 0:
            raise RuntimeError(f"initdb failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")

        settings = {"listen_addresses": self.host, "unix_socket_directories": self.dir}
        if self.fast:  # durability is worthless for a throwaway cluster; the time is not
            settings.update(fsync="off", synchronous_commit="off", full_page_writes="off")
        # A free port is only free until someone binds it (the other xdist worker may pick it too): retry.
        for _ in range(5):
            self.port = _free_port()
            args = [f"{bindir}/postgres", "-D", data, "-c", f"port={self.port}"]
            args += [a for k, v in settings.items() for a in ("-c", f"{k}={v}")]
            log_path = os.path.join(self.dir, f"postgres-{self.port}.log")
            with open(log_path, "wb") as log:
                # Own session: a Ctrl-C meant for pytest must not shut the server down under a running test.
                self._proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                              start_new_session=True, **self._run_kwargs())
            self._watchdog = subprocess.Popen(["sh", "-c", _WATCHDOG, "lion-pg-watchdog", str(self._proc.pid), self.dir],
                                              stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                              stderr=subprocess.DEVNULL, start_new_session=True)
            if self._wait_ready(timeout=30.0):
                return
            with open(log_path, errors="replace") as f:
                log_text = f.read()
            if "Address already in use" not in log_text:
                raise RuntimeError(f"PostgreSQL did not accept connections on port {self.port}:\n{log_text[-3000:]}")
            self._kill()
        raise RuntimeError("PostgreSQL found no free port in 5 tries")

    def _wait_ready(self, timeout: float) -> bool:
        import psycopg

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._proc.poll() is None:
            try:  # over TCP with the password, as the tests will connect: more than "the postmaster is up"
                self._connect("postgres", connect_timeout=2).close()
                return True
            except psycopg.OperationalError:
                time.sleep(0.05)
        return False

    def _connect(self, dbname: str, **kw):
        import psycopg

        return psycopg.connect(host=self.host, port=self.port, user=self.user, password=self.password,
                               dbname=dbname, **kw)

    def url(self, dbname: str) -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{dbname}"

    def create_database(self, name: str) -> str:
        from psycopg import sql

        with self._connect("postgres", autocommit=True) as conn:  # CREATE DATABASE cannot run in a transaction
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def _kill(self, graceful: bool = False) -> None:
        if self._watchdog is not None:  # first, so that it cannot signal a recycled pid later
            self._watchdog.kill()
            self._watchdog.wait()
            self._watchdog = None
        if self._proc is not None:
            if graceful and self._proc.poll() is None:
                pg_ctl = os.path.join(os.path.dirname(self._proc.args[0]), "pg_ctl")
                subprocess.run([pg_ctl, "stop", "-D", os.path.join(self.dir, "data"), "-m", "fast", "-w", "-t", "30"],
                               capture_output=True, **self._run_kwargs())
            try:
                self._proc.wait(timeout=5 if graceful else 0)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None

    def stop(self) -> None:
        """Idempotent; also the atexit hook."""
        atexit.unregister(self.stop)
        self._kill(graceful=True)
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


@pytest.fixture(scope="session")
def postgres_server():
    server, missing = PostgresServer(fast=True), None
    try:
        server.start()
    except PostgresNotFound as e:
        missing = str(e)
    if missing:  # a failure, never a skip: the PostgreSQL tests must run. Outside the except: one message, not two
        pytest.fail(missing, pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("LION_STORE_PASSWORD", postgres_server.password)
    return postgres_server.create_database(f"lion_test_{uuid.uuid4().hex[:16]}")
