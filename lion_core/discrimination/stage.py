"""Discrimination over the run's store: a shard's judgments written as a part, and the figures of the
committed verdicts. An evaluation judges checkpoints the same way, with its judge and reference."""

from __future__ import annotations

from typing import Any

from lion_core import shards
from lion_core.config import RunConfig
from lion_core.discrimination.judging import (
    JUDGMENTS_SCHEMA_VERSION,
    REQUEST_FAILED,
    JudgeItem,
    JudgmentRow,
    discriminate,
    discrimination_report,
)
from lion_core.limits import role_config
from lion_core.llm.gateway import ChatGateway
from lion_core.llm.replies import UNUSABLE
from lion_core.results import DiscriminationReport, Judging, Shard
from lion_core.rows import rows_of, to_table
from lion_core.store import PoolRef, RunStore


def judge_items(store: RunStore, pool: list[dict[str, Any]], judging: Judging) -> tuple[list[JudgeItem], dict[str, str]]:
    """The items of `pool` that have both answers, and for the others why not (`no teacher answer`,
    `no student answer`)."""
    ids = [r["id"] for r in pool]
    t = {r["id"]: r for r in shards.rows_with_ids(store, judging.teacher, ids) if r["status"] == "ok"}
    # An empty student answer is an answer (the item is hard); a failed one is missing.
    s = {r["id"]: r for r in shards.rows_with_ids(store, judging.student, ids) if r["status"] in ("ok", "empty")}
    if judging.silent_student is not None:
        s = {r["id"]: (a if (a := s.get(r["id"])) and (a["answer"] or "").strip() else {"answer": judging.silent_student})
             for r in pool}
    items = [JudgeItem(r["id"], r["instruction"], r["input"], t[r["id"]]["answer"], s[r["id"]]["answer"] or "")
             for r in pool if r["id"] in t and r["id"] in s]
    missing = {r["id"]: "no teacher answer" if r["id"] not in t else "no student answer"
               for r in pool if r["id"] not in t or r["id"] not in s}
    return items, missing


def judge(gateway: ChatGateway, items: list[JudgeItem], judging: Judging, config: RunConfig,
          stage: str = "discrimination") -> list[JudgmentRow]:
    """The items judged by the judging role, with its prompt style and re-asks and the loop's tau."""
    referee = role_config(config, judging.role)
    return discriminate(gateway, items, style=referee.prompt_style, tau=config.loop.tau, max_reasks=referee.max_reasks,
                        stage=stage)


def discrimination_part(store: RunStore, shard: Shard, judging: Judging, gateway: ChatGateway,
                        config: RunConfig) -> shards.Written:
    """Judgments of the shard's rows (Cache Pool items; an evaluation's questions), written as an
    uncommitted part; items lacking an answer are labelled `missing_answer`, items whose requests failed
    are kept as failures (the stage judges whether there are too many)."""
    pool = shards.shard_rows(store, shard)
    items, missing = judge_items(store, pool, judging)
    rows = judge(gateway, items, judging, config)
    failures = [[raw for raw in (r.raw_t_first or "", r.raw_s_first or "") if raw.startswith(REQUEST_FAILED)]
                for r in rows]
    failures = [f for f in failures if f]
    rows += [JudgmentRow.unjudged(r["id"], r["instruction"], r["input"], "missing_answer", missing[r["id"]])
             for r in pool if r["id"] in missing]
    part = store.write_table(shard.k, shards.part_name(shard), to_table(rows, JudgmentRow),
                             schema_version=JUDGMENTS_SCHEMA_VERSION, parents=[shard.pool, judging.teacher, judging.student])
    final = f"{REQUEST_FAILED}: {UNUSABLE}:"
    return shards.Written(part=part, failed=len(failures),
                          final=sum(all(raw.startswith(final) for raw in f) for f in failures))


def judgments_report(store: RunStore, judgments: PoolRef) -> DiscriminationReport:
    """The committed verdicts in figures; items without an answer are counted apart, not judged."""
    rows = rows_of(store.read_table(judgments), JudgmentRow, judgments.uri)
    judged = [r for r in rows if r.label != "missing_answer"]
    return discrimination_report(judged, missing_answer=len(rows) - len(judged))
