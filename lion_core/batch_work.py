"""A stage's requests, by reference (`BatchWork`), replayed for the Batch API: the whole stage (every
shard, every round) is run through a gateway and its outcome discarded. With a store-only gateway
this completes, or names what the store still lacks (lion_core.llm.replay)."""

from __future__ import annotations

from lion_core.config import RunConfig
from lion_core.discrimination.stage import judge, judge_items
from lion_core.generation.stage import generate_from
from lion_core.imitation.answers import teacher_answers
from lion_core.llm.gateway import ChatGateway
from lion_core.results import BatchWork
from lion_core.store import RunStore


def replay_requests(store: RunStore, work: BatchWork, gateway: ChatGateway, config: RunConfig, stage: str) -> None:
    if work.kind == "answers":
        teacher_answers(gateway, store.read_pool(work.pool).to_dict("records"), stage)
    elif work.kind == "judgments":
        assert work.judging is not None
        items, _ = judge_items(store, store.read_pool(work.pool).to_dict("records"), work.judging)
        judge(gateway, items, work.judging, config, stage=stage)
    else:  # no judgments: the one-shot baseline's generation
        generate_from(store, work.k, work.pool, work.judgments, gateway, config)
