"""`lion export-dataset`: what a run distilled, as a Hugging Face dataset folder.

One row per instruction of the run's last Cache Pool (seeds and every accepted generation), with the
teacher's answer, its origin (seed, hard or easy generation), the iteration it entered, and the
referee's scores from every discrimination that judged it (the latest ones also as flat columns).
The folder holds `data/train-00000-of-00001.parquet` (what `datasets.load_dataset("parquet",
data_dir=DIR)` and the Hub's viewer read) and `README.md`, a dataset card whose YAML header the Hub
reads. It is built aside and renamed into place, so it is complete or absent; pushing it to the Hub is
a separate step that never changes it.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from lion_core.config import RunConfig
from lion_core.errors import LionError, StoreError
from lion_core.files import sha256_bytes
from lion_core.results import DatasetExport
from lion_core.rows import table_of_dicts
from lion_core.store import RunStore
from lion_core.version import code_version

DATA_FILE = "data/train-00000-of-00001.parquet"
MARKER = "lion_dataset.json"
"""Written into an export folder: what it holds, and that a later export of the same run may replace it."""

JUDGMENT = pa.struct([("iteration", pa.int32()), ("teacher_score", pa.float64()), ("student_score", pa.float64()),
                      ("score_gap", pa.float64()), ("label", pa.string())])
SCHEMA = pa.schema([
    ("id", pa.string()), ("instruction", pa.string()), ("input", pa.string()), ("output", pa.string()),
    ("origin", pa.string()), ("iteration", pa.int32()), ("parent_id", pa.string()),
    ("answer_status", pa.string()), ("answer_error", pa.string()), ("finish_reason", pa.string()),
    ("judged_iteration", pa.int32()), ("label", pa.string()), ("teacher_score", pa.float64()),
    ("student_score", pa.float64()), ("score_gap", pa.float64()), ("judgments", pa.list_(JUDGMENT)),
])


def default_export_dir(config: RunConfig, run_id: str) -> str:
    """Where a run's dataset goes when no folder is given: `dataset` beside its checkpoints."""
    return str(Path(config.storage.final_checkpoint_dir(run_id)).parent / "dataset")


def last_pool_iteration(store: RunStore) -> int:
    """The last iteration with a committed Cache Pool (it holds every instruction the run has)."""
    last = None
    for k in store.iterations():
        manifest = store.manifest(k)
        if manifest and "cache_pool" in manifest.files:
            last = k
    if last is None:
        raise StoreError(f"run {store.run_id!r} at {store.run_uri} has no Cache Pool yet: nothing to export")
    return last


def distilled_rows(store: RunStore) -> tuple[list[dict[str, Any]], int]:
    """The dataset's rows (in Cache Pool order) and the iteration whose Cache Pool they come from."""
    n = last_pool_iteration(store)
    answers: dict[str, dict[str, Any]] = {}
    history: dict[str, list[dict[str, Any]]] = {}
    for k in range(n + 1):
        manifest = store.manifest(k)
        files = manifest.files if manifest else {}
        for name in ("teacher_answers_train", "teacher_answers_cache"):
            if name in files:
                for r in store.read_table(store.ref_from_entry(files[name])).to_pylist():
                    if r["id"] not in answers or (answers[r["id"]]["status"] != "ok" and r["status"] == "ok"):
                        answers[r["id"]] = r
        if "judgments" in files:
            for r in store.read_table(store.ref_from_entry(files["judgments"])).to_pylist():
                history.setdefault(r["id"], []).append({
                    "iteration": k, "teacher_score": r["mean_t"], "student_score": r["mean_s"], "score_gap": r["d"],
                    "label": r["label"]})
    rows = []
    for p in store.read_table(store.ref(n, "cache_pool")).to_pylist():
        a = answers.get(p["id"])
        judged = history.get(p["id"], [])
        last = judged[-1] if judged else {}
        ok = bool(a and a["status"] == "ok" and a["answer"])
        rows.append({
            "id": p["id"], "instruction": p["instruction"], "input": p["input"], "output": a["answer"] if ok else None,
            "origin": p["origin"], "iteration": p["iteration"], "parent_id": p["parent_id"],
            "answer_status": "ok" if ok else ("failed" if a else "unanswered"),
            "answer_error": None if ok or not a else a["error"], "finish_reason": a["finish_reason"] if a else None,
            "judged_iteration": last.get("iteration"), "label": last.get("label"),
            "teacher_score": last.get("teacher_score"), "student_score": last.get("student_score"),
            "score_gap": last.get("score_gap"), "judgments": judged,
        })
    return rows, n


def size_category(n: int) -> str:
    """The Hub's `size_categories` value for n rows."""
    for bound, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
                         (10_000_000, "1M<n<10M")):
        if n < bound:
            return label
    return "n>1M" if n < 1_000_000_000 else "n>1T"


def dataset_card(*, config: RunConfig, run_id: str, pool_iteration: int, rows: Sequence[Mapping[str, Any]],
                 license: str, languages: Sequence[str], created: str) -> str:
    """README.md: the YAML header the Hub reads (licence, size, task, languages, the data files), then
    where the data came from and how much of each kind there is."""
    by_origin = Counter(r["origin"] for r in rows)
    by_iter = Counter(r["iteration"] for r in rows)
    answered = sum(r["answer_status"] == "ok" for r in rows)
    judged = sum(any(j["label"] != "missing_answer" for j in r["judgments"]) for r in rows)
    header = {
        "license": license,
        "pretty_name": f"Lion distillation of {config.teacher.model} (run {run_id})",
        "size_categories": [size_category(len(rows))],
        "task_categories": ["text-generation"],
        "language": list(languages),
        "tags": ["lion", "distillation", "synthetic", "instruction-tuning"],
        "configs": [{"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*.parquet"}]}],
    }
    import yaml

    lines = [
        "---", yaml.safe_dump(header, sort_keys=False).rstrip(), "---",
        f"# {header['pretty_name']}",
        "",
        f"Instructions and the teacher's answers from the Lion adversarial distillation run `{run_id}`: the seed "
        "instructions, and the new ones a generator wrote after a referee found the student falling short of "
        f"the teacher (hard) or matching it (easy), up to iteration {pool_iteration}. {len(rows)} instructions, "
        f"{answered} with a teacher answer; {judged} were judged by the referee at least once.",
        "",
        "## Models",
        "",
        "| role | model |",
        "|---|---|",
        *(f"| {role} | `{getattr(config, role).model}` |" for role in ("teacher", "referee", "generator")),
        f"| student | `{config.student.model}`, `{config.training.method}` fine-tuning |",
        "",
        "## Rows",
        "",
        "| origin | rows |",
        "|---|---|",
        *(f"| {o} | {c} |" for o, c in sorted(by_origin.items())),
        "",
        "| iteration entered | rows |",
        "|---|---|",
        *(f"| {k} | {c} |" for k, c in sorted(by_iter.items())),
        "",
        "## Columns",
        "",
        "- `instruction`, `input`, `output`: the task, its optional input and the teacher's answer (null when the "
        "teacher's request failed: `answer_status` and `answer_error` say how)",
        "- `origin`: `seed`, or `hard` / `easy` for instructions generated from items the student got wrong / right",
        "- `iteration`: the iteration the instruction entered the pool; `parent_id`: the item it was generated from",
        "- `label`, `teacher_score`, `student_score`, `score_gap`, `judged_iteration`: the referee's latest verdict "
        "(scores 1-10, averaged over both answer orders); `judgments`: every verdict, one per iteration",
        "",
        "## Loading",
        "",
        "```python",
        "from datasets import load_dataset",
        'ds = load_dataset("parquet", data_dir="<this folder>")["train"]',
        "```",
        "",
        "## Provenance",
        "",
        f"- run `{run_id}`, Cache Pool of iteration {pool_iteration}, exported {created}",
        f"- config hash `{config.config_hash()}`",
        f"- code version `{code_version()}`",
        "",
        "## Licence",
        "",
        f"Declared as `{license}`. The answers were written by `{config.teacher.model}`: its provider's terms of use "
        "apply to them, and the seed data's licence to the seed instructions.",
    ]
    return "\n".join(lines) + "\n"


def write_dataset(store: RunStore, config: RunConfig, out: str | Path, *, license: str = "other",
                  languages: Sequence[str] = ("en",)) -> DatasetExport:
    """Write the run's dataset folder at `out`. An earlier export of the same run there is replaced
    (a scheduled run re-exports); any other non-empty folder is refused."""
    import datetime as dt

    out = Path(out).resolve()
    _check_target(out, store.run_id)
    rows, n = distilled_rows(store)
    created = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    (staging / DATA_FILE).parent.mkdir(parents=True)
    table = table_of_dicts(rows, SCHEMA, "dataset")
    pq.write_table(table, staging / DATA_FILE, compression="zstd")
    digest = sha256_bytes((staging / DATA_FILE).read_bytes())
    (staging / "README.md").write_text(dataset_card(config=config, run_id=store.run_id, pool_iteration=n, rows=rows,
                                                    license=license, languages=languages, created=created),
                                       encoding="utf-8")
    result = DatasetExport(
        run_id=store.run_id, out=str(out), data_file=DATA_FILE, rows=len(rows),
        answered=sum(r["answer_status"] == "ok" for r in rows),
        by_origin=dict(sorted(Counter(r["origin"] for r in rows).items())),
        by_iteration=dict(sorted(Counter(r["iteration"] for r in rows).items())), sha256=digest)
    # the marker travels with the upload: no local path in it
    (staging / MARKER).write_text(json.dumps({**result.model_dump(exclude={"out"}), "pool_iteration": n, "created_at": created,
                                              "config_hash": config.config_hash(), "code_version": code_version()},
                                             indent=2))
    retired = out.with_name(out.name + ".old")
    shutil.rmtree(retired, ignore_errors=True)
    if out.exists():
        out.rename(retired)
    staging.rename(out)
    shutil.rmtree(retired, ignore_errors=True)
    return result


def _check_target(out: Path, run_id: str) -> None:
    if not out.exists():
        return
    if not out.is_dir():
        raise LionError(f"--out {out} is a file; give a folder")
    if not any(out.iterdir()):
        return
    marker = out / MARKER
    if not marker.is_file() or json.loads(marker.read_text()).get("run_id") != run_id:
        raise LionError(f"--out {out} already holds other files; give a new folder (an export of this run "
                        "would be replaced, anything else is left alone)")


def push_to_hub(folder: str | Path, repo: str, *, private: bool = True, endpoint: str | None = None,
                token: str | None = None) -> str:
    """Upload an export folder as the Hub dataset `repo` (created if missing); its URL. The token is
    huggingface_hub's own (HF_TOKEN, or `hf auth login`) unless given. Any failure is one clear error
    that says the folder on disk is complete."""
    from huggingface_hub import HfApi, get_token
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi(endpoint=endpoint, token=token)
    try:
        url = api.create_repo(repo, repo_type="dataset", private=private, exist_ok=True)
        api.upload_folder(folder_path=str(folder), repo_id=repo, repo_type="dataset",
                          commit_message=f"Lion dataset export ({Path(folder).name})")
    except Exception as err:  # noqa: BLE001 - offline, refused, not found: one message, the export stays as it is
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        for secret in filter(None, (token, get_token())):
            first = first.replace(secret, "***")
        status = getattr(getattr(err, "response", None), "status_code", None)
        refused = isinstance(err, HfHubHTTPError) and status is not None and 400 <= status < 500 and status != 429
        raise HubPushError(f"could not push {folder} to the Hugging Face Hub dataset {repo!r} "
                           f"({endpoint or api.endpoint}): {type(err).__name__}: {first}. The export on disk is "
                           "complete; push it again " + ("once the repo, token (HF_TOKEN) or card is fixed" if refused
                                                         else "when the Hub is reachable"),
                           retryable=not refused) from err
    return str(url)


class HubPushError(LionError):
    """The upload failed; `retryable` when trying again later may succeed (network, 5xx, 429), not when
    the Hub refused the request as it is (a bad token, repo name or card)."""

    def __init__(self, message: str, *, retryable: bool):
        super().__init__(message)
        self.retryable = retryable
