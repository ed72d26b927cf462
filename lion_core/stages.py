"""The Lion stages over the versioned store: each reads PoolRefs, writes one artifact, returns its ref.

imitation:      teacher answers for a pool (every instruction answered once, reused across iterations
                through the response store; failures kept as failures, never as empty answers)
discrimination: referee verdicts over the Cache Pool's teacher and student answers
generation:     new instructions from hard and easy seeds, every candidate recorded with its outcome
pool update:    Train Pool := new instructions; Cache Pool := Cache Pool + new, committed together
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from lion_core.config import RunConfig
from lion_core.errors import ShardIncomplete
from lion_core.generation import generate
from lion_core.limits import role_config
from lion_core.llm.gateway import Gateway
from lion_core.llm.requests import ChatRequest
from lion_core.pools import POOL_SCHEMA_VERSION, make_row, pool_table
from lion_core.prompts import teacher_messages
from lion_core.referee import REQUEST_FAILED, JudgeItem, discriminate, discrimination_report
from lion_core.results import (
    BatchWork,
    DiscriminationReport,
    GenerationReport,
    Judging,
    Pools,
    Shard,
    TrainingInputs,
)
from lion_core.store import PoolRef, RunStore, read_pool, read_table, resolve_uri

ANSWERS_SCHEMA_VERSION = "answers/1"
JUDGMENTS_SCHEMA_VERSION = "judgments/2"
CANDIDATES_SCHEMA_VERSION = "candidates/2"

ANSWERS_SCHEMA = pa.schema([
    ("id", pa.string()), ("instruction", pa.string()), ("input", pa.string()), ("answer", pa.string()),
    ("finish_reason", pa.string()), ("status", pa.string()), ("error", pa.string()),
])
JUDGMENTS_SCHEMA = pa.schema([
    ("id", pa.string()), ("instruction", pa.string()), ("input", pa.string()),
    ("t_score_t_first", pa.float64()), ("s_score_t_first", pa.float64()),
    ("t_score_s_first", pa.float64()), ("s_score_s_first", pa.float64()),
    ("mean_t", pa.float64()), ("mean_s", pa.float64()), ("d", pa.float64()), ("label", pa.string()),
    ("reason", pa.string()), ("raw_t_first", pa.string()), ("raw_s_first", pa.string()), ("asks", pa.int32()),
])
CANDIDATES_SCHEMA = pa.schema([
    ("round", pa.int32()), ("origin", pa.string()), ("seed_id", pa.string()), ("seed_instruction", pa.string()),
    ("seed_has_input", pa.bool_()), ("max_tokens", pa.int32()), ("cached", pa.bool_()), ("raw", pa.string()),
    ("finish_reason", pa.string()), ("instruction", pa.string()), ("input", pa.string()),
    ("status", pa.string()), ("reason", pa.string()), ("max_rouge_l", pa.float64()), ("most_similar", pa.string()),
])


def teacher_answers(gateway: Gateway, rows: Sequence[dict[str, Any]], stage: str = "imitation") -> list[dict[str, Any]]:
    s = gateway.endpoint.config.sampling
    requests = [ChatRequest.of(teacher_messages(r["instruction"], r["input"]), temperature=s.temperature,
                               top_p=s.top_p, max_tokens=s.max_tokens, tag=r["id"]) for r in rows]
    out = []
    for r, res in zip(rows, gateway.run_sync(requests, stage)):
        out.append({"id": r["id"], "instruction": r["instruction"], "input": r["input"],
                    "answer": res.text if res.ok else None, "finish_reason": res.finish_reason,
                    "status": "ok" if res.ok else "failed",
                    "error": None if res.ok else f"{res.error_class}: {res.error_message}"})
    return out


def generation_stage(store: RunStore, k: int, cache_pool: PoolRef, judgments: PoolRef, gateway: Gateway,
                     config: RunConfig) -> tuple[PoolRef, GenerationReport]:
    """New instructions for iteration k+1 from iteration k's hard and easy items: every candidate,
    committed as iteration k's `candidates`, and the figures."""
    result = _generate(k, cache_pool, judgments, gateway, config)
    table = pa.Table.from_pylist(result.candidates, schema=CANDIDATES_SCHEMA)
    ref = _commit(store, k, "candidates", table, CANDIDATES_SCHEMA_VERSION, [cache_pool, judgments])
    return ref, GenerationReport.model_validate(result.report)


def _generate(k: int, cache_pool: PoolRef, judgments: PoolRef, gateway: Gateway, config: RunConfig) -> Any:
    pool = read_pool(cache_pool).to_dict("records")
    by_id = {r["id"]: r for r in pool}
    labels = {r["id"]: r["label"] for r in read_table(judgments).to_pylist()}
    hard = [by_id[i] for i, lab in labels.items() if lab == "hard" and i in by_id]
    easy = [by_id[i] for i, lab in labels.items() if lab == "easy" and i in by_id]
    return generate(gateway, hard_seeds=hard, easy_seeds=easy, cache_pool=pool, next_iteration=k + 1,
                    loop=config.loop, cfg=config.generator)


def accepted_rows(candidates: PoolRef, next_iteration: int) -> list[dict[str, Any]]:
    """The new pool rows, rebuilt from the candidates file exactly as `generate` made them."""
    return [make_row(c["instruction"], c["input"], origin=c["origin"], iteration=next_iteration, parent_id=c["seed_id"],
                     metadata={"round": c["round"], "max_rouge_l": c["max_rouge_l"]})
            for c in read_table(candidates).to_pylist() if c["status"] == "accepted"]


def update_pools(store: RunStore, k: int, cache_pool: PoolRef, new_rows: Sequence[dict[str, Any]],
                 candidates: PoolRef) -> Pools:
    """Iteration k+1: Train Pool = the new instructions, Cache Pool = old Cache Pool + new; committed
    together in one manifest write (`candidates` is their lineage)."""
    old = read_table(cache_pool).to_pylist()
    train = pool_table(new_rows)
    cache = pool_table([*old, *new_rows])
    refs = {
        "train_pool": store.write_table(k + 1, "train_pool", train, schema_version=POOL_SCHEMA_VERSION, parents=[candidates]),
        "cache_pool": store.write_table(k + 1, "cache_pool", cache, schema_version=POOL_SCHEMA_VERSION,
                                        parents=[cache_pool, candidates]),
    }
    store.commit(k + 1, refs, parents={"train_pool": [candidates], "cache_pool": [cache_pool, candidates]})
    return Pools(**refs)


# -- shards: API stages run as independent slices of a pool, written as parts, then merged ------------

def shard_bounds(n_rows: int, shard_size: int) -> list[tuple[int, int]]:
    """[lo, hi) row ranges of at most shard_size rows; an empty pool has no shards."""
    return [(lo, min(lo + shard_size, n_rows)) for lo in range(0, n_rows, shard_size)]


def part_name(shard: Shard) -> str:
    return f"{shard.name}.part-{shard.lo:07d}-{shard.hi:07d}"


def committed(store: RunStore, k: int, name: str) -> PoolRef | None:
    """Iteration k's committed `name`, or None when that stage has not finished."""
    manifest = store.manifest(k)
    entry = manifest.files.get(name) if manifest else None
    return store.ref_from_entry(entry) if entry else None


def check_failures(n_failed: int, n: int, max_fraction: float, what: str) -> None:
    if n and n_failed / n > max_fraction:
        raise ShardIncomplete(f"{what}: {n_failed} of {n} requests failed after retries (allowed: "
                              f"{max_fraction:.0%}); the failures are recorded and a retry sends only those")


def answer_part(store: RunStore, shard: Shard, gateway: Gateway, stage: str, max_failed_fraction: float) -> PoolRef:
    """The gateway role's answers (the teacher's; an evaluation's reference) for the shard's rows,
    written as an uncommitted part; failed requests are kept as failures."""
    rows = shard_rows(shard)
    answers = teacher_answers(gateway, rows, stage)
    check_failures(sum(a["status"] != "ok" for a in answers), len(answers), max_failed_fraction,
                   f"{shard.name} rows {shard.lo}-{shard.hi}")
    table = pa.Table.from_pylist(answers, schema=ANSWERS_SCHEMA)
    return store.write_table(shard.k, part_name(shard), table, schema_version=ANSWERS_SCHEMA_VERSION,
                             parents=[shard.pool])


def discrimination_part(store: RunStore, shard: Shard, judging: Judging, gateway: Gateway,
                        config: RunConfig) -> PoolRef:
    """Judgments of the shard's rows (Cache Pool items; an evaluation's questions), written as an
    uncommitted part; items lacking an answer are labelled `missing_answer`."""
    referee = role_config(config, judging.role)
    pool, t, items = _judge_items(shard_rows(shard), judging)
    rows = discriminate(gateway, items, style=referee.prompt_style, tau=config.loop.tau, max_reasks=referee.max_reasks)
    failed = sum(r["raw_t_first"].startswith(REQUEST_FAILED) or r["raw_s_first"].startswith(REQUEST_FAILED)
                 for r in rows)
    check_failures(failed, len(rows), config.orchestration.max_failed_fraction,
                   f"{shard.name} rows {shard.lo}-{shard.hi}")
    judged = {r["id"] for r in rows}
    missing = [{"id": r["id"], "instruction": r["instruction"], "input": r["input"], "label": "missing_answer",
                "reason": "no teacher answer" if r["id"] not in t else "no student answer",
                "raw_t_first": "", "raw_s_first": "", "asks": 0} for r in pool if r["id"] not in judged]
    table = pa.Table.from_pylist(rows + missing, schema=JUDGMENTS_SCHEMA)
    return store.write_table(shard.k, part_name(shard), table, schema_version=JUDGMENTS_SCHEMA_VERSION,
                             parents=[shard.pool, judging.teacher, judging.student])


def shard_rows(shard: Shard) -> list[dict[str, Any]]:
    """The shard's rows of its pool (the pool is read and verified once per process, see read_table)."""
    return read_table(shard.pool).slice(shard.lo, shard.hi - shard.lo).to_pylist()


def rows_with_ids(ref: PoolRef, ids: Sequence[str]) -> list[dict[str, Any]]:
    """The rows of an artifact whose `id` is one of `ids` (a shard's share of a whole-pool table)."""
    table = read_table(ref)
    return table.filter(pc.is_in(table["id"], value_set=pa.array(list(ids), pa.string()))).to_pylist()


def _judge_items(pool: list[dict[str, Any]], judging: Judging) -> tuple[list[dict[str, Any]], dict, list[JudgeItem]]:
    ids = [r["id"] for r in pool]
    t = {r["id"]: r for r in rows_with_ids(judging.teacher, ids) if r["status"] == "ok"}
    # An empty student answer is an answer (the item is hard); a failed one is missing.
    s = {r["id"]: r for r in rows_with_ids(judging.student, ids) if r["status"] in ("ok", "empty")}
    if judging.silent_student is not None:
        s = {r["id"]: (a if (a := s.get(r["id"])) and (a["answer"] or "").strip() else {"answer": judging.silent_student})
             for r in pool}
    items = [JudgeItem(r["id"], r["instruction"], r["input"], t[r["id"]]["answer"], s[r["id"]]["answer"] or "")
             for r in pool if r["id"] in t and r["id"] in s]
    return pool, t, items


def replay_requests(work: BatchWork, gateway: Any, config: RunConfig, stage: str) -> None:
    """Run the stage's requests (the whole pool's, every round) through `gateway` and discard the
    outcome: with a store-only gateway this completes, or names what the store still lacks."""
    if work.kind == "answers":
        teacher_answers(gateway, read_pool(work.pool).to_dict("records"), stage)
    elif work.kind == "judgments":
        assert work.judging is not None
        referee = role_config(config, work.judging.role)
        _, _, items = _judge_items(read_pool(work.pool).to_dict("records"), work.judging)
        discriminate(gateway, items, style=referee.prompt_style, tau=config.loop.tau, max_reasks=referee.max_reasks,
                     stage=stage)
    else:
        assert work.judgments is not None
        _generate(work.k, work.pool, work.judgments, gateway, config)


def merge_parts(store: RunStore, k: int, name: str, parts: Sequence[PoolRef], parents: Sequence[PoolRef]) -> PoolRef:
    """Concatenate the parts (in row order) into iteration k's `name` and commit it; the parts stay as
    written. `judgments*` are verdicts, anything else is answers."""
    if name.startswith("judgments"):
        schema, version = JUDGMENTS_SCHEMA, JUDGMENTS_SCHEMA_VERSION
    else:
        schema, version = ANSWERS_SCHEMA, ANSWERS_SCHEMA_VERSION
    tables = [read_table(p).select(schema.names).cast(schema) for p in parts]
    table = pa.concat_tables(tables) if tables else schema.empty_table()
    return _commit(store, k, name, table, version, list(parents))


def judgments_report(judgments: PoolRef) -> DiscriminationReport:
    """The verdicts in figures; items without an answer are counted apart, not judged."""
    rows = read_table(judgments).to_pylist()
    judged = [r for r in rows if r["label"] != "missing_answer"]
    return DiscriminationReport(**discrimination_report(judged), missing_answer=len(rows) - len(judged))


def student_answer_stage(store: RunStore, k: int, pool: PoolRef, checkpoint: str, config: RunConfig,
                         responses: Any, name: str = "student_answers") -> PoolRef:
    """The student checkpoint's answers for every instruction of `pool`, committed as `name`."""
    from lion_core.student.infer import student_answers_in_child

    rows = read_pool(pool).to_dict("records")
    answers = student_answers_in_child(resolve_uri(checkpoint), rows, config.student.generation, responses.path,
                                       prompt_format=config.student.prompt_format, seed=config.loop.random_seed + k,
                                       dtype=config.student.dtype)
    table = pa.Table.from_pylist(answers, schema=ANSWERS_SCHEMA)
    return _commit(store, k, name, table, ANSWERS_SCHEMA_VERSION, [pool])


def _commit(store: RunStore, k: int, name: str, table: pa.Table, version: str, parents: list[PoolRef]) -> PoolRef:
    ref = store.write_table(k, name, table, schema_version=version, parents=parents)
    store.commit(k, {name: ref}, parents={name: parents})
    return ref


def imitation_inputs(store: RunStore, k: int, config: RunConfig, base_model: str,
                     previous_checkpoint: str | None) -> TrainingInputs:
    """What iteration k's fine-tune starts from and trains on.

    `previous` (default): iteration k-1's checkpoint, on iteration k's teacher answers for the Train Pool.
    `base`: the base model, on the teacher answers of every Train Pool so far (written as
    `train_answers_all`, de-duplicated by instruction id)."""
    answers = store.ref(k, "teacher_answers_train")
    if config.training.init_from == "previous":
        return TrainingInputs(start_from=previous_checkpoint if k > 0 and previous_checkpoint else base_model,
                              answers=answers)
    if k == 0:
        return TrainingInputs(start_from=base_model, answers=answers)
    seen: dict[str, dict[str, Any]] = {}
    parents = []
    for i in range(k + 1):
        ref = store.ref(i, "teacher_answers_train")
        parents.append(ref)
        for r in read_table(ref).to_pylist():
            seen.setdefault(r["id"], r)
    table = pa.Table.from_pylist(list(seen.values()), schema=ANSWERS_SCHEMA)
    return TrainingInputs(start_from=base_model,
                          answers=_commit(store, k, "train_answers_all", table, ANSWERS_SCHEMA_VERSION, parents))
