"""Creating a run (iteration 0 from the seed set) and describing what a run holds."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from lion_core.config import RunConfig, config_changes, identity_of
from lion_core.errors import ConfigError, StoreError
from lion_core.files import exists, join_uri, read_bytes, write_bytes_atomic
from lion_core.pools import POOL_SCHEMA_VERSION, pool_table
from lion_core.preflight import preflight_problems
from lion_core.results import OpenedRun
from lion_core.seeds import load_seeds
from lion_core.store import PoolRef, RunStore, new_run_id

POOL_NAMES = ("train_pool", "cache_pool")
log = logging.getLogger("lion.runs")


@dataclass(frozen=True)
class InitResult:
    run_id: str
    run_uri: str
    seed_uri: str
    records_read: int
    duplicates_dropped: int
    train_pool: PoolRef
    cache_pool: PoolRef


def init_run(config: RunConfig, seed_source: str | None = None, run_id: str | None = None) -> InitResult:
    """Create iteration 0: Train Pool = Cache Pool = the seed set, as in the paper.

    Seeds are validated before anything is written. run.json is written last, so a crash leaves no
    run that looks created, and the same command can simply be repeated.
    """
    source = seed_source or config.data.seed
    if not source:
        raise ConfigError("no seed data: pass --seed or set data.seed in the config")
    store = RunStore(config.storage.runs_root, run_id or new_run_id(), config)
    if store.exists():
        raise StoreError(f"run {store.run_id!r} already exists at {store.run_uri}; choose another run id")
    seeds = load_seeds(source)
    table = pool_table(seeds.rows)
    refs = {
        name: store.write_table(0, name, table, schema_version=POOL_SCHEMA_VERSION, parents=[seeds.source])
        for name in POOL_NAMES
    }
    store.commit(0, refs, parents={name: [seeds.source] for name in POOL_NAMES})
    store.write_run_info(
        extra={
            "seed": {
                "uri": seeds.source.uri,
                "sha256": seeds.source.sha256,
                "records_read": seeds.records_read,
                "duplicates_dropped": seeds.duplicates_dropped,
            }
        }
    )
    return InitResult(
        run_id=store.run_id, run_uri=store.run_uri, seed_uri=seeds.source.uri,
        records_read=seeds.records_read, duplicates_dropped=seeds.duplicates_dropped,
        train_pool=refs["train_pool"], cache_pool=refs["cache_pool"],
    )


def check_resume(store: RunStore, config: RunConfig) -> list[tuple[str, Any, Any]]:
    """Accept `config` for continuing the run in `store`, or refuse it naming every field of the run's
    identity that differs (old and new value). Returns the operations fields that changed (rate
    limits, retries, parallelism, locations...), which the run records in resumes.json."""
    import datetime as dt
    import json

    info = store.read_run_info()
    old, new = _with_defaults(info.get("config") or {}), config.to_json_dict()
    differ = config_changes(identity_of(old), identity_of(new))
    if differ:
        lines = "\n".join(f"  - {path}: {_show(a)} -> {_show(b)}" for path, a, b in differ)
        raise ConfigError(f"run {store.run_id!r} was made with a different config; {len(differ)} field(s) that "
                          f"change results differ (made with -> given):\n{lines}\n"
                          "resume with the config the run was made with, or start a new run")
    changed = config_changes(old, new)
    history = read_resumes(store)
    entry = [{"field": path, "old": a, "new": b} for path, a, b in changed]
    if changed and (not history or history[-1]["changed"] != entry):  # a repeated resume adds nothing new
        history.append({"at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                        "changed": entry})
        write_bytes_atomic(join_uri(store.run_uri, "resumes.json"), json.dumps(history, indent=2, ensure_ascii=False).encode())
    return changed


def recorded_config(store: RunStore) -> RunConfig:
    """The config a run was made with (run.json), for commands given only its id."""
    return RunConfig.model_validate(store.read_run_info()["config"])


def _with_defaults(old: dict[str, Any]) -> dict[str, Any]:
    """A run's recorded config with the fields added since it was made set to their defaults (which keep
    the behaviour it was made with), so a newer version of the project still resumes it."""
    try:
        return RunConfig.model_validate(old).to_json_dict()
    except ValueError:  # made by a version whose fields no longer validate: compared as recorded
        return old


def open_run(config: RunConfig, run_id: str, seed: str | None = None) -> OpenedRun:
    """Create iteration 0 from the seeds, or reopen the run when it exists (a resume). Everything the
    config names is checked first (lion_core.preflight), so a run with a problem pays for nothing."""
    store = RunStore(config.storage.runs_root, run_id, config)
    checked = config if seed is None else config.model_copy(update={"data": config.data.model_copy(update={"seed": seed})})
    if problems := preflight_problems(checked, new_run=not store.exists()):
        raise ConfigError(f"run {run_id!r} cannot start; {len(problems)} problem(s):\n"
                          + "\n".join(f"  - {p}" for p in problems))
    if not store.exists():
        init_run(config, seed_source=seed, run_id=run_id)
    changed = check_resume(store, config)
    return OpenedRun(run_uri=store.run_uri, created_at=store.read_run_info()["created_at"], changed=changed)


def read_resumes(store: RunStore) -> list[dict[str, Any]]:
    """The resumes that changed operations settings, in order: {"at", "changed": [{field, old, new}]}."""
    import json

    uri = join_uri(store.run_uri, "resumes.json")
    return json.loads(read_bytes(uri)) if exists(uri) else []


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def describe_run(runs_root: str, run_id: str) -> dict[str, Any]:
    """Everything `lion pools show` prints; every listed file is read back and its hash verified."""
    store = RunStore(runs_root, run_id)
    info = store.read_run_info()
    iterations = []
    for k in store.iterations():
        manifest = store.manifest(k)
        assert manifest is not None
        files = []
        for name, entry in sorted(manifest.files.items()):
            ref = store.ref_from_entry(entry)
            item: dict[str, Any] = {
                "name": name, "path": entry.path, "rows": entry.rows, "sha256": entry.sha256,
                "schema_version": entry.schema_version, "parents": list(entry.parents),
                "config_hash": entry.config_hash, "code_version": entry.code_version,
            }
            try:
                table = store.read_table(ref)
                item["verified"] = True
                if entry.schema_version == POOL_SCHEMA_VERSION:
                    item["origins"] = dict(sorted(Counter(table.column("origin").to_pylist()).items()))
            except StoreError as err:  # IntegrityError included: report it, keep listing
                item["verified"] = False
                item["error"] = str(err)
            files.append(item)
        iterations.append({"iteration": k, "updated_at": manifest.updated_at, "files": files})
    return {
        "run_id": run_id, "run_uri": store.run_uri, "created_at": info.get("created_at"),
        "config_hash": info.get("config_hash"), "code_version": info.get("code_version"),
        "seed": info.get("seed"), "iterations": iterations,
    }


class RunLocked(StoreError):
    """Another live process on this machine is working on the run."""


@dataclass(frozen=True)
class HeldRun:
    """The run held by this process: the lock file, and the flow run that held it last (from the file;
    it is dead, since its lock was free), or None."""

    path: str | None
    previous_owner: str | None


@contextlib.contextmanager
def run_lock(config: RunConfig, run_id: str, owner: str) -> Iterator[HeldRun]:
    """Hold the run for this process: an exclusive lock beside a SQLite response store (a local file), or
    in a PostgreSQL store's server (a session lock, so it holds across machines), which is dropped when the
    process ends, however it ends. Two processes working on one run at once would write its pools over
    each other. The lock names its owner (a flow run id); the owner found when the lock is taken held it
    last and is dead, so a resume may close that flow run and give back what it held. A file system
    without locks only costs the check (a warning)."""
    if config.storage.shared_store:
        from lion_core.llm.responses import ResponseStore

        with ResponseStore.open(config.storage) as store:
            taken, who = store.hold_run(run_id, f"pid {os.getpid()} on {socket.gethostname()}", owner)
            if not taken:
                raise RunLocked(f"run {run_id} is already running ({who}; lock in {store.location}): wait for it "
                                "to end or stop it, then resume")
            yield HeldRun(path=f"{store.location}#run_locks/{run_id}", previous_owner=who if who != owner else None)
        return

    folder = os.path.join(config.storage.local_folder(), ".lion-locks")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{run_id}.lock")
    fh = open(path, "a+")
    try:
        try:
            _take_exclusive(fh)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            raise RunLocked(f"run {run_id} is already running ({holder}; lock {path}): wait for it to end or "
                            "stop it, then resume") from None
        except OSError as err:  # e.g. a network file system without flock
            log.warning("run %s is not locked against a second process (%s: %s)", run_id, path, err)
            yield HeldRun(path=None, previous_owner=None)
            return
        fh.seek(0)
        previous = dict(line.split(" ", 1) for line in fh.read().splitlines() if " " in line).get("flow_run")
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} on {socket.gethostname()}\nflow_run {owner}\n")
        fh.flush()
        yield HeldRun(path=path, previous_owner=previous if previous != owner else None)
    finally:
        fh.close()  # closing the file releases the lock


def _take_exclusive(fh: Any, patience_s: float = 2.0) -> None:
    """The run's lock, waiting a moment for a `lion status` that holds it shared while it looks."""
    import fcntl

    deadline = time.monotonic() + patience_s
    while True:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.05)


def run_holder(config: RunConfig, run_id: str) -> str | None:
    """Who holds the run now (`run_lock`'s owner line: its process and machine), None when no live process
    does. Looks without taking: a shared lock tried and let go at once, or the PostgreSQL server's locks."""
    if config.storage.shared_store:
        from lion_core.llm.responses import ResponseStore

        with ResponseStore.open(config.storage) as store:
            return store.run_holder(run_id)
    import fcntl

    path = os.path.join(config.storage.local_folder(), ".lion-locks", f"{run_id}.lock")
    if not os.path.exists(path):
        return None
    with open(path) as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return (fh.read().splitlines() or ["another process"])[0]
        except OSError:  # no locks on this file system: no way to tell
            return None
        return None  # closing the file lets the shared lock go


TARGET_FILE = "target.json"


def record_target(store: RunStore, iterations: int) -> None:
    """The iterations the run is going for now (`lion run -n` may differ from the config's), for `lion status`."""
    write_bytes_atomic(join_uri(store.run_uri, TARGET_FILE), json.dumps({"iterations": iterations}).encode())


def recorded_target(store: RunStore) -> int | None:
    uri = join_uri(store.run_uri, TARGET_FILE)
    return int(json.loads(read_bytes(uri))["iterations"]) if exists(uri) else None
