"""Fan a batch of chat requests out to one OpenAI-compatible endpoint, paced, retried and persisted.

`Gateway.run(requests, stage)` returns one `ChatResult` per request, in input order. Requests already
answered (a success in the response store) are not sent again; identical requests in a batch are sent
once; a request is claimed in the store before it goes, so a request another worker (a shard, a process,
a machine) has in flight is waited for, not sent twice. Every response is stored the moment it arrives;
a request that still fails after its attempts is stored as a failure (error class, message, attempts)
and is retried by the next run. Authentication and permission errors stop the batch at once rather than
failing every request one by one.

Three things stop a batch cleanly, with every answer received stored and nothing recorded as failed
that was not asked: connections refused one after another (`EndpointUnreachable`, retried by the
task), an outage longer than `retry.max_outage_s` (`EndpointDown`, see lion_core.llm.health) and a
spending cap (`BudgetExhausted`, see lion_core.llm.budget). A paid reply of no use (`UnusableReply`)
is retried at most `retry.max_unusable_replies` times over the request's whole life, then recorded as
failed and left alone until `ResponseStore.grant_unusable_again` (`lion run --retry-failed`).
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import openai

# The HTTP response type the OpenAI SDK hands back from `client.post(..., cast_to=...)`: httpx2's from
# openai 3 on, httpx's before (either may be installed beside the other).
if int(openai.__version__.split(".")[0]) >= 3:
    from httpx2 import Response as HttpResponse
else:  # pragma: no cover - the pinned SDK is 3.x
    from httpx import Response as HttpResponse

from lion_core.config import EMBEDDED, ApiRole
from lion_core.database import StoreUnavailable
from lion_core.errors import ConfigError, EndpointDown, LionError
from lion_core.llm.accounting import Accounting
from lion_core.llm.budget import Budget, cost_usd, worst_case_usd
from lion_core.llm.claims import Holder
from lion_core.llm.health import BatchView, Breaker, Outage, server_error
from lion_core.llm.loop import run_shared
from lion_core.llm.progress import Progress
from lion_core.llm.ratelimit import RateLimiter
from lion_core.llm.replies import (  # noqa: F401 - MalformedResponse, parse_completion, scrub: imported from here too
    NO_KEY,
    MalformedResponse,
    UnusableReply,
    classify,
    parse_completion,
    scrub,
    truncate,
)
from lion_core.llm.requests import ChatRequest, ChatResult
from lion_core.llm.responses import Previous, ResponseStore, StoredCall
from lion_core.llm.store_lane import StoreLane

LEARNT_RPM: dict[tuple[str, str, int], tuple[float, float]] = {}
"""Where an adaptive limiter ended (its level and the level it last backed off from), per endpoint, model and
ceiling: the next batch of this process to the same endpoint starts there (every shard of a stage is a
batch of its own)."""
OUTAGES: dict[tuple[int, str, str], Outage] = {}
"""Each endpoint's health as this process's batches see it (per process: a forked child has its own loop)."""


class EndpointRejected(LionError):
    """The endpoint refused our credentials or permissions: retrying cannot help, so the batch stops."""


class EndpointUnreachable(LionError):
    """Connections to the endpoint failed one after another: the batch stopped sending. Unlike a
    rejected key this may pass, so the task that ran the batch is retried later."""


class _NotSent(Exception):
    """The batch stopped (the breaker opened, a cap was reached) before this request went: it stays
    unsent, not failed."""


@dataclass(frozen=True)
class Endpoint:
    """Where a role's requests go. `endpoint_id` and `model` (from the config) key the stored responses,
    so an embedded server on a new port, or a rotated key, still finds earlier answers."""

    role: str
    endpoint_id: str
    model: str
    base_url: str
    api_model: str
    config: ApiRole
    api_key: str = field(default=NO_KEY, repr=False)

    @classmethod
    def from_config(
        cls, role: str, cfg: ApiRole, *, embedded: tuple[str, str] | Mapping[str, tuple[str, str]] | None = None,
        environ: Mapping[str, str] = os.environ,
    ) -> Endpoint:
        """`embedded` is (base_url, served model name) of a running embedded server, or those of each
        embedded model name ({model: (base_url, served model)})."""
        if cfg.base_url == EMBEDDED:
            if isinstance(embedded, Mapping):
                embedded = embedded.get(cfg.model)
            if embedded is None:
                raise LionError(f"{role}: base_url is '{EMBEDDED}' but no embedded server for {cfg.model!r} was started")
            base_url, api_model = embedded
        else:
            base_url, api_model = cfg.base_url, cfg.model
        key = NO_KEY
        if cfg.api_key_env:
            key = environ.get(cfg.api_key_env, "")
            if not key:
                raise ConfigError(f"{role}.api_key_env: environment variable {cfg.api_key_env} is not set or empty")
        return cls(role=role, endpoint_id=cfg.base_url, model=cfg.model, base_url=base_url, api_model=api_model,
                   config=cfg, api_key=key)


class ChatGateway(Protocol):
    """What a stage needs of a gateway, whichever answers it: `Gateway` (the endpoint, live),
    `lion_prefect.slots.SlottedGateway` (the same, holding a slot of the key's limit per chunk) or
    `lion_core.llm.replay.StoreGateway` (the response store only, in batch mode). A stage written against
    this runs unchanged interactively and in batch mode."""

    endpoint: Endpoint
    """The role's endpoint: its `config` carries the sampling settings the stage builds requests with."""

    def run_sync(self, requests: Sequence[ChatRequest], stage: str) -> list[ChatResult]:
        """One result per request, in input order, each with its request's tag."""
        ...


class Gateway:
    """One endpoint's client. One batch at a time per endpoint in a process; across processes, shard
    tasks share budgets through the orchestrator's concurrency limits. `budget` keeps the run's spend
    (and its caps, when it has any)."""

    def __init__(self, endpoint: Endpoint, store: ResponseStore, accounting: Accounting | None = None,
                 rng: random.Random | None = None, budget: Budget | None = None):
        self.endpoint = endpoint
        self.store = store
        self.accounting = accounting or Accounting()
        self.budget = budget
        self._rng = rng or random.Random()

    def run_sync(self, requests: Sequence[ChatRequest], stage: str) -> list[ChatResult]:
        return run_shared(self.run(requests, stage))

    async def run(self, requests: Sequence[ChatRequest], stage: str) -> list[ChatResult]:
        ep = self.endpoint
        keys = [r.key(ep.endpoint_id, ep.model) for r in requests]
        unique: dict[str, ChatRequest] = {}
        for k, r in zip(keys, requests):
            unique.setdefault(k, r)
        usage = self.accounting.row(ep.role, stage)
        usage.requests += len(unique)
        results: dict[str, ChatResult] = self.store.successes(unique)
        usage.cached += len(results)
        progress = Progress(len(unique), f"{ep.role}/{stage}")
        for _ in results:
            progress.update(True, cached=True)
        todo: asyncio.Queue[str] = asyncio.Queue()
        for k in unique:
            if k not in results:
                todo.put_nowait(k)
        fatal: list[BaseException] = []
        limits, retry = ep.config.rate_limits, ep.config.retry
        limiter = RateLimiter(limits.requests_per_minute, limits.tokens_per_minute, adaptive=limits.adaptive,
                              name=f"{ep.role}/{stage}")
        learnt = (ep.base_url, ep.api_model, limits.requests_per_minute)
        if learnt in LEARNT_RPM:
            limiter.start_at(*LEARNT_RPM[learnt])
        progress.level = limiter.level_text
        call = StoredCall(role=ep.role, stage=stage, endpoint=ep.endpoint_id, model=ep.model)
        breaker = Breaker(retry.unreachable_after)
        outage = OUTAGES.setdefault((os.getpid(), ep.base_url, ep.api_model), Outage(
            f"{ep.base_url} ({ep.api_model})", retry.outage_after, retry.max_outage_s, retry.initial_backoff_s,
            retry.max_backoff_s))

        def stopped() -> bool:
            return bool(fatal) or breaker.open or bool(self.budget and self.budget.refused)

        batch = BatchView(stopped)
        lane = StoreLane(self.store, Holder.new().name, todo, chunk=min(limits.max_concurrency, 64))

        async def worker(client: openai.AsyncOpenAI, limit: int | None = None) -> None:
            while not stopped() and (limit is None or limit > 0):
                taken = await lane.take(stopped)
                if taken is None:
                    return
                k, found, previous, gave_up = taken
                if found:  # answered by another worker since this batch looked
                    await lane.release(k)
                    results[k] = found
                    usage.cached += 1
                    progress.update(True, cached=True)
                    continue
                if gave_up:  # another worker spent its attempts on it while this batch waited: not again now
                    await lane.release(k)
                    results[k] = ChatResult(key=k, ok=False, attempts=previous[0], unusable=previous[1],
                                            error_class=previous[2], error_message=previous[3], cached=True)
                    usage.failures += 1
                    progress.update(False)
                    continue
                limit = None if limit is None else limit - 1
                try:
                    results[k] = await self._ask(client, limiter, call, k, unique[k], stage, breaker, (outage, batch),
                                                 previous, lane)
                except (EndpointRejected, EndpointDown) as err:
                    fatal.append(err)
                    return
                except _NotSent:
                    await lane.release(k)
                    return
                if results[k].cached:  # given up before this batch: nothing was written, the claim stays
                    await lane.release(k)
                progress.update(results[k].ok)

        async def keep_claims() -> None:
            """Renew the batch's claims while its requests are in flight. When the store cannot be reached
            for half a lease, the batch stops: past the lease another worker may send the same requests."""
            failing_since = None
            while True:
                await asyncio.sleep(self.store.lease_s / 4)
                try:
                    await lane.renew()
                    failing_since = None
                except Exception as err:  # noqa: BLE001 - a renewal that fails is retried until it is too late
                    failing_since = failing_since or time.monotonic()
                    if time.monotonic() - failing_since >= self.store.lease_s / 2:
                        fatal.append(StoreUnavailable(
                            f"{ep.role}: the response store did not answer for {self.store.lease_s / 2:.0f} s "
                            f"({type(err).__name__}: {err}); the batch stops before its claims run out"))
                        return

        try:
            if todo.qsize():
                async with openai.AsyncOpenAI(base_url=ep.base_url, api_key=ep.api_key, max_retries=0,
                                              timeout=retry.request_timeout_s) as client:
                    # One request goes alone first: a rejected key costs one call, not one per worker,
                    # and the client's first-call set-up does not squeeze the paced requests together.
                    renewal = asyncio.ensure_future(keep_claims())
                    workers: list[asyncio.Future] = []
                    try:
                        await worker(client, limit=1)
                        n_workers = min(limits.max_concurrency, todo.qsize() + len(lane.waiting()) + lane.held())
                        workers = [asyncio.ensure_future(worker(client)) for _ in range(n_workers)]
                        await asyncio.gather(*workers)
                    except BaseException:
                        # One worker failed (the store's disk full, say) or the batch was cancelled: the
                        # others stop too, before the client and the store close under them.
                        for w in workers:
                            w.cancel()
                        await asyncio.gather(*workers, return_exceptions=True)
                        raise
                    finally:
                        renewal.cancel()
                        await asyncio.gather(renewal, return_exceptions=True)
                        await lane.close()
        finally:
            progress.close()
            if limits.adaptive:
                LEARNT_RPM[learnt] = limiter.learnt()
        done = sum(1 for k in unique if k in results)
        if fatal:
            err = fatal[0]
            raise type(err)(f"{err} ({done} of {len(unique)} requests answered or recorded; the rest not sent)")
        if self.budget and self.budget.refused:
            raise self.budget.exhausted(done, len(unique))
        if breaker.open:
            raise EndpointUnreachable(
                f"{ep.role}: {ep.base_url} is unreachable: {breaker.streak} connection failures in a row (last "
                f"{breaker.last}); {done} of {len(unique)} requests answered or recorded, the rest not sent")
        return [replace(results[k], tag=r.tag) for k, r in zip(keys, requests)]

    async def _ask(self, client: openai.AsyncOpenAI, limiter: RateLimiter, call: StoredCall, key: str,
                   request: ChatRequest, stage: str, breaker: Breaker, health: tuple[Outage, BatchView],
                   previous: Previous, lane: StoreLane) -> ChatResult:
        """Send one claimed request until it is answered or given up, and store the outcome with the
        claim's release (`previous`: what the store holds of the request's earlier tries)."""
        ep, cfg = self.endpoint, self.endpoint.config
        outage, batch = health
        usage = self.accounting.row(ep.role, stage)
        prior, prior_unusable, last_class, last_message = previous
        allowance = cfg.retry.max_unusable_replies
        if prior_unusable >= allowance:  # paid for often enough: it stays failed (`lion run --retry-failed`)
            usage.failures += 1
            return ChatResult(key=key, ok=False, attempts=prior, error_class=last_class, error_message=last_message,
                              unusable=prior_unusable, cached=True)
        current, truncated = request, False
        attempts, unusable, error_class, error_message = 0, 0, "", ""
        free = 0  # attempts that do not count against max_attempts: unusable replies (their own budget), outages
        reply_tokens = self.budget.config.estimated_reply_tokens if self.budget else 0
        while attempts - free < cfg.retry.max_attempts:
            probe = await outage.admit(batch)
            if probe is None:
                raise _NotSent
            try:
                est = current.estimated_tokens()
                await limiter.acquire(est)
                reserved = worst_case_usd(current, cfg.price, reply_tokens)
                if breaker.open or (self.budget and not self.budget.reserve(reserved)):
                    limiter.settle(est, 0)
                    if not attempts or not breaker.open:
                        raise _NotSent
                    break  # recorded below as the failure it was
                attempts += 1
                usage.calls += 1
                usage.retries += attempts > 1
                started = time.monotonic()
                try:
                    body: dict[str, Any] = {"model": ep.api_model, "messages": current.api_messages(),
                                            "temperature": current.temperature, "top_p": current.top_p}
                    if current.max_tokens is not None:
                        body["max_tokens"] = current.max_tokens
                    # The SDK's documented raw POST: its HTTP client, auth, timeouts and error statuses (raised
                    # as openai.APIStatusError), without its typed parameter transform and response model,
                    # which cost a sixth of the gateway's CPU at a few hundred requests a second.
                    raw = await client.post("/chat/completions", cast_to=HttpResponse, body=body)
                    limiter.observe(raw.headers)
                    text, finish, pt, ct = parse_completion(raw.json(), cfg.retry.invalid_finish_reasons)
                except UnusableReply as err:  # paid for, of no use: counted, and retried on a budget of its own
                    pt, ct = err.prompt_tokens, err.completion_tokens
                    self._paid(stage, reserved, pt, ct, est, limiter)
                    breaker.record(None)
                    outage.record(None)
                    unusable += 1
                    free += 1
                    error_class, error_message = type(err).__name__, scrub(str(err), ep.api_key)[:2000]
                    if prior_unusable + unusable >= allowance:
                        break
                    # kept at once: a stop before this request ends must not give it its budget again
                    await lane.write("failed", call, request, ChatResult(
                        key=key, ok=False, attempts=prior + attempts, error_class=error_class,
                        error_message=error_message, truncated=truncated, unusable=prior_unusable + unusable),
                        release=False)
                    await asyncio.sleep(self._backoff(attempts - free + 1, None))
                    continue
                except Exception as err:  # noqa: BLE001 - every failure is classified and recorded
                    limiter.settle(est, 0)
                    if self.budget:
                        self.budget.settle(reserved, None)
                    outcome = classify(err)
                    error_class = type(err).__name__
                    error_message = scrub(str(err), ep.api_key)[:2000]
                    breaker.record(err, error_message)
                    outage.record(err, error_message)
                    if outcome.fatal:
                        raise EndpointRejected(
                            f"{ep.role}: {ep.base_url} rejected the request: {error_class}: {error_message}") from None
                    if outage.down and server_error(err):
                        free += 1  # the endpoint is down, not this request: the attempt is not its own
                        continue
                    if outcome.context_overflow and cfg.context_overflow == "truncate" and not truncated:
                        current, truncated = truncate(current, cfg.truncate_keep_fraction), True
                        continue
                    if not outcome.retryable or breaker.open:
                        break
                    if outcome.throttled:
                        limiter.on_throttle()
                    if outcome.retry_after is not None:
                        limiter.pause(outcome.retry_after)
                    if attempts - free < cfg.retry.max_attempts:
                        await asyncio.sleep(self._backoff(attempts - free, outcome.retry_after))
                    continue
            finally:
                if probe:
                    outage.probe_done()
            self._paid(stage, reserved, pt, ct, est, limiter)
            limiter.on_success()
            breaker.record(None)
            outage.record(None)
            result = ChatResult(key=key, ok=True, text=text, finish_reason=finish, prompt_tokens=pt,
                                completion_tokens=ct, attempts=prior + attempts, truncated=truncated,
                                unusable=prior_unusable + unusable)
            await lane.write("ok", call, request, result, time.monotonic() - started)
            return result
        usage.failures += 1
        result = ChatResult(key=key, ok=False, attempts=prior + attempts, error_class=error_class,
                            error_message=error_message, truncated=truncated, unusable=prior_unusable + unusable)
        await lane.write("failed", call, request, result)
        return result

    def _paid(self, stage: str, reserved: float, pt: int, ct: int, est: int, limiter: RateLimiter) -> None:
        """A reply came with a bill: the limiter, the accounting and the run's spend learn what it cost."""
        ep = self.endpoint
        limiter.settle(est, pt + ct if pt + ct else est)
        self.accounting.add_tokens(ep.role, stage, pt, ct, ep.config.price)
        if self.budget:
            self.budget.settle(reserved, cost_usd(pt, ct, ep.config.price))

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return retry_after * (1 + 0.1 * self._rng.random())
        r = self.endpoint.config.retry
        base = min(r.max_backoff_s, r.initial_backoff_s * 2 ** (attempt - 1))
        return base * (0.5 + 0.5 * self._rng.random())
