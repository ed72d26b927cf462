"""Files at any fsspec location (a local folder, s3://, gs://, memory://): atomic writes, whole-file
reads, content hashes, and Parquet with Lion's metadata. The run's store (lion_core.store) is built on
these; a `run://` reference is the store's to resolve and is refused here."""

from __future__ import annotations

import hashlib
import io
import json
import os
import uuid
from collections.abc import Mapping
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from lion_core.errors import StoreError

RUN_SCHEME = "run://"
"""References to files inside a run are `run://<run id>/<path in the run>`: task results, cache keys,
lineage and checkpoint records stay valid when the run folder is moved or copied to another root."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def join_uri(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])


def filesystem(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    try:
        if uri.startswith(RUN_SCHEME):  # a reference, not a location: resolve it against its runs root first
            raise StoreError(f"{uri}: a run reference; resolve it with the run's store (RunStore.resolve)")
        return fsspec.core.url_to_fs(uri)
    except (ImportError, ValueError) as err:
        raise StoreError(f"{uri}: cannot open this location: {err}") from None


def exists(uri: str) -> bool:
    fs, path = filesystem(uri)
    return fs.exists(path)


def read_bytes(uri: str) -> bytes:
    fs, path = filesystem(uri)
    try:
        return fs.cat_file(path)
    except FileNotFoundError:
        raise StoreError(f"{uri}: file not found") from None


def write_bytes_atomic(uri: str, data: bytes) -> None:
    """Write `data` so that readers see either the old state or the whole new file, never a part."""
    fs, path = filesystem(uri)
    if isinstance(fs, LocalFileSystem):
        folder = os.path.dirname(path)
        os.makedirs(folder, exist_ok=True)
        tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # make the rename itself durable
        finally:
            os.close(dir_fd)
    else:
        fs.makedirs(fs._parent(path), exist_ok=True)
        fs.pipe_file(path, data)


def table_to_parquet_bytes(table: pa.Table, lion_meta: Mapping[str, Any]) -> bytes:
    meta = dict(table.schema.metadata or {})
    meta[b"lion"] = json.dumps(lion_meta, sort_keys=True, ensure_ascii=False).encode()
    buf = io.BytesIO()
    pq.write_table(table.replace_schema_metadata(meta), buf, compression="zstd")
    return buf.getvalue()


def parquet_lion_metadata(data: bytes) -> dict[str, Any]:
    meta = pq.read_schema(pa.BufferReader(data)).metadata or {}
    return json.loads(meta.get(b"lion", b"{}"))
