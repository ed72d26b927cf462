"""The versioned Parquet store of a run: atomic writes, hash-checked reads, manifests, lineage.

Layout under the runs root (a local folder or any fsspec URI):

    <run_id>/run.json                     the run's config, config hash, code version, creation time
    <run_id>/iter-<k>/<name>.parquet      train_pool, cache_pool and every stage output
    <run_id>/iter-<k>/manifest.json       per file: sha256, rows, schema version, parents, config hash, code version

A file becomes part of an iteration only when the manifest that lists it is written, so the manifest is
the commit point. Local writes go to a temporary file that is fsynced and renamed into place; on object
stores a single PUT of the whole object is already all-or-nothing. Reads verify the sha256 recorded in
the `PoolRef`, so a truncated or altered file is never read as good data. One writer per run is assumed
(deployments run with a concurrency limit of 1).
"""

from __future__ import annotations

import collections
import datetime as dt
import json
import os
import re
import threading
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict

from lion_core.config import RunConfig, identity_of
from lion_core.errors import IntegrityError, StoreError
from lion_core.files import (
    RUN_SCHEME,
    exists,
    filesystem,
    join_uri,
    parquet_lion_metadata,
    read_bytes,
    sha256_bytes,
    table_to_parquet_bytes,
    write_bytes_atomic,
)
from lion_core.pools import POOL_SCHEMA_VERSION, validate_pool
from lion_core.version import code_version

MANIFEST_SCHEMA_VERSION = "manifest/1"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_ITER_DIR = re.compile(r"^iter-(\d+)$")


class PoolRef(BaseModel):
    """The small, hashable handle that tasks pass around instead of data."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    uri: str
    sha256: str
    rows: int
    schema_version: str


class SourceRef(BaseModel):
    """An input from outside the run (a seed file, a dataset), recorded as lineage."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    uri: str
    sha256: str | None = None


Parent = PoolRef | SourceRef


class FileEntry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    path: str  # relative to the run folder, so a run can be moved or copied to object storage
    sha256: str
    rows: int
    schema_version: str
    parents: tuple[dict[str, Any], ...] = ()
    config_hash: str
    code_version: str
    created_at: str


class Manifest(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    schema_version: str = MANIFEST_SCHEMA_VERSION
    run_id: str
    iteration: int
    updated_at: str
    files: dict[str, FileEntry] = {}


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def validate_run_id(run_id: str) -> str:
    if not _RUN_ID.match(run_id):
        raise StoreError(
            f"run id {run_id!r} is invalid: use letters, digits, '_', '-' and '.', starting with a letter or digit"
        )
    return run_id


def new_run_id() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]


_COMMIT_LOCK = threading.Lock()


def _root(runs_root: str) -> str:
    # A local root is made absolute so refs stay valid in a task running from another folder.
    root = runs_root if "://" in runs_root else os.path.abspath(os.path.expanduser(runs_root))
    return root.rstrip("/") or "/"


def resolve_uri(uri: str, runs_root: str | None) -> str:
    """Where a reference points under `runs_root`: `run://<run id>/<path>` is that run's folder there
    (the root is the caller's to say: the config's `storage.runs_root`, or an evaluation's root); any
    other URI is returned as it is. Every read verifies the sha256 it was recorded with, so a reference
    resolved against the wrong root fails loudly instead of reading another file."""
    if not uri.startswith(RUN_SCHEME):
        return uri
    if runs_root is None:
        raise StoreError(f"{uri}: a run reference needs the runs root it lives under")
    run_id, _, rel = uri[len(RUN_SCHEME):].partition("/")
    base = join_uri(_root(runs_root), validate_run_id(run_id))
    return join_uri(base, rel) if rel else base


def run_relative(path: str, runs_root: str, run_id: str) -> str:
    """`path` as a `run://` reference when it lies inside the run's folder under `runs_root`; otherwise unchanged."""
    base = join_uri(_root(runs_root), run_id)
    if path == base or path.startswith(base + "/"):
        return RUN_SCHEME + run_id + path[len(base):]
    return path


class RunStore:
    """Files of one run. Writes need the run config, whose hash every artifact records."""

    def __init__(self, runs_root: str, run_id: str, config: RunConfig | None = None):
        self.runs_root = _root(runs_root)
        self.run_id = validate_run_id(run_id)
        self.run_uri = join_uri(self.runs_root, run_id)
        self.config = config

    # -- references: `run://` URIs of any run under this store's root -----------------------
    def resolve(self, uri: str) -> str:
        return resolve_uri(uri, self.runs_root)

    def run_relative(self, path: str) -> str:
        return run_relative(path, self.runs_root, self.run_id)

    def read_table(self, ref: PoolRef) -> pa.Table:
        return read_table(ref, self.runs_root)

    def read_pool(self, ref: PoolRef) -> pd.DataFrame:
        return read_table(ref, self.runs_root).to_pandas()

    def table(self, k: int, name: str) -> pa.Table:
        """Iteration k's committed `name`, read and verified."""
        return self.read_table(self.ref(k, name))

    # -- layout -----------------------------------------------------------------------------
    def iteration_uri(self, k: int) -> str:
        return join_uri(self.run_uri, f"iter-{k}")

    def file_uri(self, k: int, name: str) -> str:
        if not _NAME.match(name):
            raise StoreError(f"artifact name {name!r} is invalid: use lower-case letters, digits, '_', '-', '.'")
        return join_uri(self.iteration_uri(k), f"{name}.parquet")

    def manifest_uri(self, k: int) -> str:
        return join_uri(self.iteration_uri(k), "manifest.json")

    def _relative(self, uri: str) -> str | None:
        for prefix in (self.run_uri + "/", f"{RUN_SCHEME}{self.run_id}/"):
            if uri.startswith(prefix):
                return uri[len(prefix):]
        return None

    def reference(self, rel: str) -> str:
        """The `run://` reference of a file of this run."""
        return f"{RUN_SCHEME}{self.run_id}/{rel}"

    def exists(self) -> bool:
        return exists(join_uri(self.run_uri, "run.json"))

    # -- run info ---------------------------------------------------------------------------
    def _require_config(self) -> RunConfig:
        if self.config is None:
            raise StoreError(f"{self.run_uri}: writing needs the run config")
        return self.config

    def write_run_info(self, extra: Mapping[str, Any] | None = None) -> None:
        """Create run.json; refuses to overwrite an existing run."""
        config = self._require_config()
        uri = join_uri(self.run_uri, "run.json")
        if exists(uri):
            raise StoreError(f"run {self.run_id!r} already exists at {self.run_uri}; choose another run id")
        info = {
            "run_id": self.run_id,
            "created_at": _now(),
            "code_version": code_version(),
            "config_hash": config.config_hash(),
            "config": config.to_json_dict(),
            **(extra or {}),
        }
        write_bytes_atomic(uri, json.dumps(info, indent=2, sort_keys=True, ensure_ascii=False).encode())

    def read_run_info(self) -> dict[str, Any]:
        uri = join_uri(self.run_uri, "run.json")
        if not exists(uri):
            raise StoreError(f"no run {self.run_id!r} under {self.runs_root} ({uri} not found)")
        return json.loads(read_bytes(uri))

    # -- tables -----------------------------------------------------------------------------
    def write_table(
        self,
        k: int,
        name: str,
        table: pa.Table,
        *,
        schema_version: str,
        parents: Sequence[Parent] = (),
    ) -> PoolRef:
        """Write one artifact of iteration k atomically and return its ref (not yet in the manifest).

        Rewriting a file that a manifest already lists is refused unless the bytes hash the same.
        """
        config = self._require_config()
        if schema_version == POOL_SCHEMA_VERSION:
            validate_pool(table, where=f"{name} (iteration {k})")
        parent_dicts = [self._parent_dict(p) for p in parents]
        lion_meta = {
            "schema_version": schema_version,
            "run_id": self.run_id,
            "iteration": k,
            "name": name,
            "config_hash": config.config_hash(),
            "config": identity_of(config.to_json_dict()),  # operations settings live in run.json and resumes.json
            "code_version": code_version(),
            "parents": parent_dicts,
        }
        data = table_to_parquet_bytes(table, lion_meta)
        digest = sha256_bytes(data)
        uri = self.file_uri(k, name)
        manifest = self.manifest(k)
        committed = manifest.files.get(name) if manifest else None
        if committed is not None and committed.sha256 != digest:
            raise StoreError(
                f"{uri} is already committed in iteration {k} with sha256 {committed.sha256[:12]}...; "
                "refusing to overwrite it with different content"
            )
        write_bytes_atomic(uri, data)
        return PoolRef(uri=self.reference(self._relative(uri) or ""), sha256=digest, rows=table.num_rows,
                       schema_version=schema_version)

    def _parent_dict(self, parent: Parent) -> dict[str, Any]:
        d = parent.model_dump()
        rel = self._relative(parent.uri)
        if rel is not None:
            d["uri"] = rel
            d["in_run"] = True
        return d

    # -- manifests --------------------------------------------------------------------------
    def manifest(self, k: int) -> Manifest | None:
        uri = self.manifest_uri(k)
        if not exists(uri):
            return None
        try:
            return Manifest.model_validate_json(read_bytes(uri))
        except ValueError as err:
            raise StoreError(f"{uri}: unreadable manifest: {err}") from None

    def commit(self, k: int, refs: Mapping[str, PoolRef], parents: Mapping[str, Sequence[Parent]] | None = None) -> Manifest:
        """Record files in iteration k's manifest in one atomic write; all of them appear, or none.
        Commits in one process are serialised: stages of an iteration may finish at the same time."""
        with _COMMIT_LOCK:
            return self._commit(k, refs, parents)

    def _commit(self, k: int, refs: Mapping[str, PoolRef], parents: Mapping[str, Sequence[Parent]] | None) -> Manifest:
        config = self._require_config()
        old = self.manifest(k)
        files = dict(old.files) if old else {}
        for name, ref in refs.items():
            rel = self._relative(ref.uri)
            if rel is None:
                raise StoreError(f"{ref.uri} is not inside run folder {self.run_uri}")
            if not exists(join_uri(self.run_uri, rel)):
                raise StoreError(f"{ref.uri}: cannot commit a file that does not exist")
            prev = files.get(name)
            if prev is not None and prev.sha256 != ref.sha256:
                raise StoreError(f"iteration {k} already has a different {name!r} (sha256 {prev.sha256[:12]}...)")
            files[name] = FileEntry(
                path=rel,
                sha256=ref.sha256,
                rows=ref.rows,
                schema_version=ref.schema_version,
                parents=tuple(self._parent_dict(p) for p in (parents or {}).get(name, ())),
                config_hash=config.config_hash(),
                code_version=code_version(),
                created_at=_now(),
            )
        manifest = Manifest(run_id=self.run_id, iteration=k, updated_at=_now(), files=files)
        write_bytes_atomic(self.manifest_uri(k), manifest.model_dump_json(indent=2).encode())
        return manifest

    def ref(self, k: int, name: str) -> PoolRef:
        manifest = self.manifest(k)
        if manifest is None or name not in manifest.files:
            raise StoreError(f"run {self.run_id!r} iteration {k} has no committed {name!r}")
        return self.ref_from_entry(manifest.files[name])

    def ref_from_entry(self, entry: FileEntry) -> PoolRef:
        return PoolRef(uri=self.reference(entry.path), sha256=entry.sha256, rows=entry.rows,
                       schema_version=entry.schema_version)

    def iterations(self) -> list[int]:
        """Iterations with a committed manifest, in order."""
        fs, path = filesystem(self.run_uri)
        if not fs.exists(path):
            return []
        ks = []
        for entry in fs.ls(path, detail=False):
            m = _ITER_DIR.match(entry.rstrip("/").rsplit("/", 1)[-1])
            if m and fs.exists(entry.rstrip("/") + "/manifest.json"):
                ks.append(int(m.group(1)))
        return sorted(ks)


_VERIFIED: collections.OrderedDict[tuple, pa.Table] = collections.OrderedDict()
_VERIFIED_LOCK = threading.Lock()
VERIFIED_CACHE_BYTES = 512 << 20
"""Tables read and verified in this process are kept (by file, size, mtime and sha256) up to this many
bytes: the shard tasks of one stage each read the same pool and answers, and at the paper's scale
(52K-70K rows, hundreds of shards) reading and hashing them once per shard took most of a stage."""


def read_table(ref: PoolRef, runs_root: str | None = None) -> pa.Table:
    """Read a stored artifact, verifying its sha256 and schema version first; a `run://` reference is
    resolved under `runs_root` (RunStore.read_table passes its own). A local file read before and
    unchanged since (the same inode, size and times: atomic writes replace the inode) is not read again."""
    path = resolve_uri(ref.uri, runs_root)
    key = None
    if "://" not in path:
        try:
            st = os.stat(path)
            key = (path, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, ref.sha256, ref.schema_version, ref.rows)
        except OSError:
            pass  # read_bytes names the missing file
    if key is not None:
        with _VERIFIED_LOCK:
            if (table := _VERIFIED.get(key)) is not None:
                _VERIFIED.move_to_end(key)
                return table
    table = _read_verified(ref, path)
    if key is not None:
        with _VERIFIED_LOCK:
            _VERIFIED[key] = table
            while sum(t.nbytes for t in _VERIFIED.values()) > VERIFIED_CACHE_BYTES and len(_VERIFIED) > 1:
                _VERIFIED.popitem(last=False)
    return table


def _read_verified(ref: PoolRef, path: str) -> pa.Table:
    data = read_bytes(path)
    digest = sha256_bytes(data)
    if digest != ref.sha256:
        raise IntegrityError(
            f"{ref.uri}: sha256 mismatch: recorded {ref.sha256}, file has {digest} "
            f"({len(data)} bytes); the file was changed or truncated after it was written"
        )
    try:
        table = pq.read_table(pa.BufferReader(data))
    except (pa.ArrowException, OSError) as err:
        raise IntegrityError(f"{ref.uri}: not a readable Parquet file: {err}") from None
    found = parquet_lion_metadata(data).get("schema_version")
    if found != ref.schema_version:
        raise IntegrityError(f"{ref.uri}: schema version {found!r}, expected {ref.schema_version!r}")
    if table.num_rows != ref.rows:
        raise IntegrityError(f"{ref.uri}: {table.num_rows} rows, expected {ref.rows}")
    return table


def read_pool(ref: PoolRef, runs_root: str | None = None) -> pd.DataFrame:
    return read_table(ref, runs_root).to_pandas()
