"""Seed loading: the instructions both pools start from.

Accepted sources:
- an Alpaca-style JSON list, JSONL, Parquet or CSV with `instruction` and optional `input` / `output`
  (local path or fsspec URI); Self-Instruct seed tasks, whose `instances` hold input and output, too;
- `hf:<org>/<name>[@<revision>][:<split>]`, a dataset already in the local Hugging Face Hub cache
  (where `hf download` and `datasets.load_dataset` put a dataset's files); nothing is downloaded.

Loading is all-or-nothing: every bad record is reported with its file, position and reason, and a
SeedError is raised before anything is written. Exact duplicates (same id) are dropped and counted.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from lion_core.errors import SeedError
from lion_core.pools import make_row
from lion_core.store import SourceRef

MAX_ERRORS_SHOWN = 20
FORMATS = {".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".csv": "csv"}
_STRING_TYPES = (pa.string(), pa.large_string())


@dataclass(frozen=True)
class SeedSet:
    """Validated, de-duplicated seed rows in the pool schema (origin `seed`, iteration 0)."""

    rows: list[dict[str, Any]]
    source: SourceRef
    records_read: int
    duplicates_dropped: int
    duplicate_examples: list[str] = field(default_factory=list)


@dataclass
class Record:
    """One raw record of a seed source and where it was found, for error messages."""

    where: str  # e.g. "line 12" or "record 3"
    data: Any


class Problems:
    """Every bad record of a source, collected so that one error names them all (up to MAX_ERRORS_SHOWN)."""

    def __init__(self, source: str):
        self.source = source
        self.items: list[str] = []

    def add(self, where: str, reason: str) -> None:
        self.items.append(f"{where}: {reason}")

    def raise_if_any(self) -> None:
        if not self.items:
            return
        shown = self.items[:MAX_ERRORS_SHOWN]
        more = len(self.items) - len(shown)
        lines = "\n".join(f"  - {s}" for s in shown)
        tail = f"\n  ... and {more} more" if more else ""
        n = len(self.items)
        raise SeedError(f"{self.source}: {n} bad record{'s' if n != 1 else ''}, nothing was written:\n{lines}{tail}")


def load_seeds(source: str, drop_duplicates: bool = True) -> SeedSet:
    """Load, validate and (unless told not to) de-duplicate seed instructions from `source`."""
    if source.startswith("hf:"):
        files, ref = _hf_files(source)
    else:
        data = read_source_bytes(source)
        # lineage names a local seed file by its absolute path, valid from any working directory
        uri = source if "://" in source else os.path.abspath(os.path.expanduser(source))
        files, ref = [(source, data)], SourceRef(uri=uri, sha256=hashlib.sha256(data).hexdigest())
    records: list[Record] = []
    for name, data in files:
        records.extend(_parse_file(name, data, prefix=f"{name}: " if len(files) > 1 else ""))
    problems = Problems(source)
    rows: list[dict[str, Any]] = []
    seen: dict[str, str] = {}
    duplicates: list[str] = []
    for rec in records:
        row = _to_row(rec, problems)
        if row is None:
            continue
        if row["id"] in seen:
            duplicates.append(f"{rec.where} repeats {seen[row['id']]}")
            if drop_duplicates:
                continue
        seen[row["id"]] = rec.where
        rows.append(row)
    problems.raise_if_any()
    if not rows:
        raise SeedError(f"{source}: no seed instructions found")
    return SeedSet(
        rows=rows, source=ref, records_read=len(records), duplicates_dropped=len(duplicates),
        duplicate_examples=duplicates[:5],
    )


def read_source_bytes(source: str) -> bytes:
    """The bytes of a local path or fsspec URI, or a SeedError naming it and why it cannot be read."""
    try:
        with fsspec.open(source, "rb") as fh:
            return fh.read()
    except FileNotFoundError:
        raise SeedError(f"{source}: seed file not found") from None
    except IsADirectoryError:
        raise SeedError(f"{source}: is a folder, expected a seed file") from None
    except (OSError, ValueError, ImportError) as err:
        raise SeedError(f"{source}: cannot read: {err}") from None


def _format_of(name: str) -> str:
    suffix = Path(name.split("?", 1)[0]).suffix.lower()
    if suffix not in FORMATS:
        raise SeedError(f"{name}: unsupported seed format {suffix or '(no extension)'!r}; use one of {sorted(FORMATS)}")
    return FORMATS[suffix]


def decode_text(name: str, data: bytes) -> str:
    """UTF-8 text (a BOM allowed), or a SeedError naming the line and byte that do not decode."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise SeedError(
            f"{name}: line {line} (byte {err.start}): undecodable bytes {data[err.start:err.end]!r}, "
            "the file must be UTF-8; nothing was written"
        ) from None


def _parse_file(name: str, data: bytes, prefix: str) -> list[Record]:
    fmt = _format_of(name)
    if fmt == "parquet":
        return _parse_parquet(name, data, prefix)
    text = decode_text(name, data)
    if fmt == "jsonl":
        return parse_jsonl(name, text, prefix)
    if fmt == "json":
        return parse_json(name, text, prefix)
    return _parse_csv(name, text, prefix)


def parse_jsonl(name: str, text: str, prefix: str) -> list[Record]:
    """One record per non-empty line; every line that is not JSON is named in one error."""
    problems = Problems(name)
    records = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(Record(f"{prefix}line {lineno}", json.loads(line)))
        except json.JSONDecodeError as err:
            problems.add(f"{prefix}line {lineno}", f"invalid JSON: {err.msg} at column {err.colno}")
    problems.raise_if_any()
    return records


def parse_json(name: str, text: str, prefix: str) -> list[Record]:
    """The records of a JSON list (Alpaca style)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise SeedError(f"{name}: invalid JSON at line {err.lineno}, column {err.colno}: {err.msg}") from None
    if not isinstance(data, list):
        raise SeedError(f"{name}: expected a JSON list of records (Alpaca style), got a {type(data).__name__}")
    return [Record(f"{prefix}record {i + 1}", item) for i, item in enumerate(data)]


def _parse_csv(name: str, text: str, prefix: str) -> list[Record]:
    try:
        df = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise SeedError(f"{name}: invalid CSV: {err}") from None
    if "instruction" not in df.columns:
        raise SeedError(f"{name}: missing column 'instruction' (columns: {', '.join(map(str, df.columns)) or 'none'})")
    return [Record(f"{prefix}record {i + 1}", rec) for i, rec in enumerate(df.to_dict("records"))]


def _parse_parquet(name: str, data: bytes, prefix: str) -> list[Record]:
    try:
        table = pq.read_table(pa.BufferReader(data))
    except (pa.ArrowException, OSError) as err:
        raise SeedError(f"{name}: not a readable Parquet file: {err}") from None
    schema = table.schema
    if "instruction" not in schema.names:
        raise SeedError(f"{name}: missing column 'instruction' (columns: {', '.join(schema.names) or 'none'})")
    for col in ("instruction", "input", "output"):
        if col in schema.names and schema.field(col).type not in _STRING_TYPES:
            raise SeedError(f"{name}: column {col!r} has type {schema.field(col).type}, expected string")
    return [Record(f"{prefix}record {i + 1}", rec) for i, rec in enumerate(table.to_pylist())]


def text_field(rec: dict, key: str, where: str, problems: Problems, required: bool) -> str | None:
    """A record's text field; a missing, null, non-string or invalid one is added to `problems`
    (None is returned), except that an absent optional field is the empty string."""
    value = rec.get(key)
    if value is None:
        if required:
            problems.add(where, f"missing field {key!r}" if key not in rec else f"field {key!r} is null")
        return None if required else ""
    if not isinstance(value, str):
        problems.add(where, f"field {key!r} must be a string, got {type(value).__name__}")
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        problems.add(where, f"field {key!r} holds an unpaired surrogate, not valid text")
        return None
    return value


def _to_row(rec: Record, problems: Problems) -> dict[str, Any] | None:
    data, where = rec.data, rec.where
    if not isinstance(data, dict):
        problems.add(where, f"expected an object with 'instruction', got {type(data).__name__}")
        return None
    n_before = len(problems.items)
    instruction = text_field(data, "instruction", where, problems, required=True)
    if instruction is not None and not instruction.strip():
        problems.add(where, "empty instruction")
    if "input" not in data and "instances" in data:
        input_text, output = _from_instances(data["instances"], where, problems)
    else:
        input_text = text_field(data, "input", where, problems, required=False)
        output = text_field(data, "output", where, problems, required=False)
    if len(problems.items) > n_before:
        return None
    meta: dict[str, Any] = {"source_record": where}
    if output:
        meta["output"] = output
    extra = {k: v for k, v in data.items() if k not in ("instruction", "input", "output", "instances")}
    if extra:
        meta["extra"] = json.loads(json.dumps(extra, default=str))
    return make_row(instruction, input_text or "", origin="seed", iteration=0, metadata=meta)


def _from_instances(instances: Any, where: str, problems: Problems) -> tuple[str | None, str | None]:
    """Self-Instruct seed tasks keep input and output in `instances`; the first instance is used."""
    if not isinstance(instances, list) or not instances or not isinstance(instances[0], dict):
        problems.add(where, "field 'instances' must be a non-empty list of objects with 'input' and 'output'")
        return None, None
    first = instances[0]
    return (
        text_field(first, "input", f"{where} instances[0]", problems, required=False),
        text_field(first, "output", f"{where} instances[0]", problems, required=False),
    )


def _parse_hf_name(source: str) -> tuple[str, str | None, str | None]:
    spec = source[len("hf:"):]
    split = None
    if ":" in spec:
        spec, split = spec.split(":", 1)
    revision = None
    if "@" in spec:
        spec, revision = spec.split("@", 1)
    if spec.count("/") > 1 or not spec.strip("/"):
        raise SeedError(f"{source}: expected hf:<org>/<name>[@<revision>][:<split>]")
    return spec, revision, split


def _hf_files(source: str) -> tuple[list[tuple[str, bytes]], SourceRef]:
    """Data files of a Hugging Face dataset: from the local cache, else downloaded into it, as every
    Hugging Face loader does; with HF_HUB_OFFLINE set, only the cache is looked in."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    repo_id, revision, split = _parse_hf_name(source)
    try:
        folder = Path(snapshot_download(repo_id, repo_type="dataset", revision=revision, local_files_only=True))
    except LocalEntryNotFoundError:
        cache = os.environ.get("HF_HUB_CACHE") or os.environ.get("HF_HOME") or "~/.cache/huggingface"
        if constants.HF_HUB_OFFLINE:
            raise SeedError(
                f"{source}: dataset {repo_id!r} is not in the local Hugging Face cache ({cache}) and HF_HUB_OFFLINE "
                f"is set; fetch it first where there is network access (`hf download {repo_id} --repo-type dataset`) "
                "or pass a local file"
            ) from None
        try:
            folder = Path(snapshot_download(repo_id, repo_type="dataset", revision=revision,
                                            allow_patterns=[f"*{suffix}" for suffix in sorted(FORMATS)]))
        except Exception as err:  # noqa: BLE001 - the hub client's errors are many; each is reported as it is
            raise SeedError(f"{source}: dataset {repo_id!r} could not be downloaded into the Hugging Face cache "
                            f"({cache}): {type(err).__name__}: {err}") from None
    paths = sorted(
        p for p in folder.rglob("*")
        if p.is_file() and p.suffix.lower() in FORMATS and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )
    if split:
        paths = [p for p in paths if p.name.startswith(split) or split in p.relative_to(folder).parts]
    if not paths:
        raise SeedError(f"{source}: no data files ({', '.join(sorted(FORMATS))}) in {folder}"
                        + (f" for split {split!r}" if split else ""))
    files = [(str(p.relative_to(folder)), p.read_bytes()) for p in paths]
    digest = hashlib.sha256()
    for name, data in files:
        digest.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    return files, SourceRef(uri=f"hf:{repo_id}@{folder.name}" + (f":{split}" if split else ""), sha256=digest.hexdigest())

