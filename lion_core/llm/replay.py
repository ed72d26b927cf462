"""A stage's requests delivered through the Batch API: the stage is replayed against the response store.

A stage (teacher answers, referee verdicts with their re-asks, generator rounds) is a pure function of
its inputs and of the answers its gateway gives. Run through a `StoreGateway`, it either completes from
stored answers alone or stops at its first call that asks for something the store lacks (`NeedAnswers`,
naming those requests). `batch_pass` makes one look: replay, hand what is missing to the `BatchRunner`,
and go on replaying as long as answers are already there, so a stage of several rounds moves a round
each time its batches come back. Between looks the caller waits, holding nothing; once a look finds the
stage complete, the stage's own tasks run through a `StoreGateway` and read every answer from the store.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import openai

from lion_core.errors import LionError
from lion_core.llm.accounting import Accounting
from lion_core.llm.batches import BatchRunner
from lion_core.llm.budget import Budget
from lion_core.llm.gateway import ChatGateway, Endpoint
from lion_core.llm.requests import ChatRequest, ChatResult
from lion_core.llm.responses import ResponseStore, StoredCall
from lion_core.results import BatchPassResult

MAX_REPLAYS = 100
"""Replays within one look: each one completes a round whose answers are all in; a bound, not a target."""


class NeedAnswers(LionError):
    """The stage asked for requests that the response store does not hold."""

    def __init__(self, role: str, stage: str, requests: Sequence[ChatRequest]):
        self.requests = list(requests)
        super().__init__(f"{role}/{stage}: {len(self.requests)} requests are not answered in the response store; "
                         "in batch mode the flow's batch pass sends them before the stage's tasks run")


class StoreGateway:
    """A gateway that answers from the response store only. Requests the batches gave up on (`settled`)
    come back as their recorded failures; any other missing request stops the call with `NeedAnswers`."""

    def __init__(self, endpoint: Endpoint, store: ResponseStore, settled: Callable[[Sequence[str]], set[str]],
                 accounting: Accounting | None = None):
        self.endpoint, self.store, self.settled = endpoint, store, settled
        self.accounting = accounting or Accounting()

    def run_sync(self, requests: Sequence[ChatRequest], stage: str) -> list[ChatResult]:
        ep = self.endpoint
        keys = [r.key(ep.endpoint_id, ep.model) for r in requests]
        unique = dict(zip(keys, requests))
        found = self.store.successes(unique)
        rest = [k for k in unique if k not in found]
        given_up = self.settled(rest) if rest else set()
        missing = [unique[k] for k in rest if k not in given_up]
        if missing:
            raise NeedAnswers(ep.role, stage, missing)
        usage = self.accounting.row(ep.role, stage, "batch")
        usage.requests += len(unique)
        usage.failures += len(given_up)
        out = []
        for k, r in zip(keys, requests):
            if k in found:
                out.append(replace(found[k], tag=r.tag))
                continue
            row = self.store.row(k) or {}
            out.append(ChatResult(key=k, ok=False, attempts=int(row.get("attempts") or 0), tag=r.tag,
                                  error_class=row.get("error_class") or "BatchExhausted",
                                  error_message=row.get("error_message") or "batch attempts spent"))
        return out


def batch_client(endpoint: Endpoint) -> openai.OpenAI:
    """The SDK's client for the endpoint's files and batches; result files can be large, so a long read timeout."""
    return openai.OpenAI(base_url=endpoint.base_url, api_key=endpoint.api_key, max_retries=2,
                         timeout=max(endpoint.config.retry.request_timeout_s, 600.0))


def batch_runner(endpoint: Endpoint, store: ResponseStore, stage: str, accounting: Accounting | None = None,
                 client: openai.OpenAI | None = None, budget: Budget | None = None) -> BatchRunner:
    """The role's BatchRunner on the run's response store; input files wait in `<store>.batches/` beside a
    SQLite store, in the ledger itself on PostgreSQL."""
    call = StoredCall(role=endpoint.role, stage=stage, endpoint=endpoint.endpoint_id, model=endpoint.model)
    folder = None if store.path is None else Path(f"{store.path}.batches")
    return BatchRunner(client or batch_client(endpoint), store, call, endpoint.api_model, endpoint.config.batch,
                       folder, accounting=accounting, price=endpoint.config.batch_price(), budget=budget)


def batch_pass(replay: Callable[[ChatGateway], object], endpoint: Endpoint, store: ResponseStore, runner: BatchRunner,
               ask_interactively: Callable[[list[ChatRequest]], object] | None = None) -> BatchPassResult:
    """One look at a stage in batch mode: replay it against the store, move its batches, submit what it
    still needs, and replay again while the answers are already in. Requests whose batch attempts are
    spent are asked through `ask_interactively` when the role's `on_exhausted` is `interactive`."""
    submitted = asked = 0
    for _ in range(MAX_REPLAYS):
        try:
            replay(StoreGateway(endpoint, store, runner.settled))
        except NeedAnswers as need:
            progress = runner.advance(need.requests)
            submitted += progress.batches_submitted_now
            exhausted = set(progress.exhausted)
            if exhausted and runner.settings.on_exhausted == "interactive" and ask_interactively is not None:
                redo = [r for r in need.requests if r.key(endpoint.endpoint_id, endpoint.model) in exhausted]
                ask_interactively(redo)
                runner.mark_asked_interactively([r.key(endpoint.endpoint_id, endpoint.model) for r in redo])
                asked += len(redo)
                continue
            if progress.pending:
                return BatchPassResult(done=False, answered=progress.answered, failed=progress.failed,
                                       pending=progress.pending, total=progress.total,
                                       batches_live=progress.batches_live, batches_submitted=submitted,
                                       asked_interactively=asked)
            continue  # this round is settled: the stage can go on
        return BatchPassResult(done=True, batches_submitted=submitted, asked_interactively=asked)
    raise LionError(f"{endpoint.role}: the stage still asked for new requests after {MAX_REPLAYS} replays in one look")
