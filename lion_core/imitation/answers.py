"""Answers to a pool's instructions: the teacher's for the Train Pool and the Cache Pool, a reference
model's in an evaluation, and (the same rows) the student's. A failed request is kept as a failure
with its reason, never as an empty answer."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lion_core import shards
from lion_core.config import Sampling
from lion_core.llm.gateway import ChatGateway
from lion_core.llm.replies import UNUSABLE
from lion_core.llm.requests import ChatRequest
from lion_core.prompts import teacher_messages
from lion_core.results import Shard
from lion_core.rows import arrow_schema, to_table
from lion_core.store import RunStore

ANSWERS_SCHEMA_VERSION = "answers/1"


@dataclass(frozen=True, slots=True)
class AnswerRow:
    id: str | None
    instruction: str | None
    input: str | None
    answer: str | None
    """None when the request failed; the student's silence is an empty string with status `empty`."""
    finish_reason: str | None
    status: str | None
    """`ok`, `failed`, or (the student's) `empty`."""
    error: str | None


ANSWERS_SCHEMA = arrow_schema(AnswerRow)


def answer_request(row: dict[str, Any], s: Sampling) -> ChatRequest:
    """The request for a pool row's answer (its key is what the response store knows it by)."""
    return ChatRequest.of(teacher_messages(row["instruction"], row["input"]), temperature=s.temperature, top_p=s.top_p,
                          max_tokens=s.max_tokens, tag=row["id"])


def teacher_answers(gateway: ChatGateway, rows: Sequence[dict[str, Any]], stage: str = "imitation") -> list[AnswerRow]:
    """The gateway role's answer to each pool row, in order."""
    results = gateway.run_sync([answer_request(r, gateway.endpoint.config.sampling) for r in rows], stage)
    return [AnswerRow(id=r["id"], instruction=r["instruction"], input=r["input"], answer=res.text if res.ok else None,
                      finish_reason=res.finish_reason, status="ok" if res.ok else "failed",
                      error=None if res.ok else f"{res.error_class}: {res.error_message}")
            for r, res in zip(rows, results)]


def answer_part(store: RunStore, shard: Shard, gateway: ChatGateway, stage: str) -> shards.Written:
    """The gateway role's answers for the shard's rows, written as an uncommitted part; failed requests
    are kept as failures (the stage judges whether there are too many)."""
    answers = teacher_answers(gateway, shards.shard_rows(store, shard), stage)
    part = store.write_table(shard.k, shards.part_name(shard), to_table(answers, AnswerRow),
                             schema_version=ANSWERS_SCHEMA_VERSION, parents=[shard.pool])
    failed = [a for a in answers if a.status != "ok"]
    return shards.Written(part=part, failed=len(failed),
                          final=sum((a.error or "").startswith(f"{UNUSABLE}:") for a in failed))
