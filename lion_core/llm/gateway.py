"""Fan a batch of chat requests out to one OpenAI-compatible endpoint, paced, retried and persisted.

`Gateway.run(requests, stage)` returns one `ChatResult` per request, in input order. Requests already
answered (a success in the response store) are not sent again; identical requests in a batch are sent
once. Every response is stored the moment it arrives; a request that still fails after its attempts is
stored as a failure (error class, message, attempts) and is retried by the next run. Authentication
and permission errors stop the batch at once rather than failing every request one by one.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import openai
import pydantic

# The HTTP response type the OpenAI SDK hands back from `client.post(..., cast_to=...)`: httpx2's from
# openai 3 on, httpx's before (either may be installed beside the other).
if int(openai.__version__.split(".")[0]) >= 3:
    from httpx2 import Response as HttpResponse
else:  # pragma: no cover - the pinned SDK is 3.x
    from httpx import Response as HttpResponse

from lion_core.config import EMBEDDED, ApiRole
from lion_core.errors import ConfigError, LionError
from lion_core.llm.accounting import Accounting
from lion_core.llm.loop import run_shared
from lion_core.llm.progress import Progress
from lion_core.llm.ratelimit import RateLimiter, retry_after_seconds
from lion_core.llm.requests import ChatRequest, ChatResult
from lion_core.llm.responses import ResponseStore, StoredCall

_CONTEXT_OVERFLOW = re.compile(
    r"context[_ ]length|maximum context|context window|too many tokens|prompt is too long|reduce the length",
    re.IGNORECASE,
)
_KEY_LIKE = re.compile(r"\b(sk-|sk_)[A-Za-z0-9_\-*]{4,}")
NO_KEY = "no-key"  # the SDK wants some key; local endpoints ignore it


class EndpointRejected(LionError):
    """The endpoint refused our credentials or permissions: retrying cannot help, so the batch stops."""


class EndpointUnreachable(LionError):
    """Connections to the endpoint failed one after another: the batch stopped sending. Unlike a
    rejected key this may pass, so the task that ran the batch is retried later."""


class _NotSent(Exception):
    """The breaker opened before this request's first attempt: it stays unsent, not failed."""


class _Breaker:
    """Counts connection failures in a row across a batch's workers; any answer from the server,
    even an error status, shows it is reachable and resets the count."""

    def __init__(self, threshold: int):
        self.threshold, self.streak, self.last = threshold, 0, ""

    @property
    def open(self) -> bool:
        return self.streak >= self.threshold

    def record(self, err: BaseException | None, message: str = "") -> None:
        if err is None or not isinstance(err, openai.APIConnectionError):
            self.streak = 0
        elif not isinstance(err, openai.APITimeoutError):  # slow is not down
            self.streak += 1
            self.last = f"{type(err).__name__}: {message}"


class MalformedResponse(Exception):
    """A 2xx answer that is not a usable chat completion."""


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


@dataclass(frozen=True)
class _Outcome:
    retryable: bool
    retry_after: float | None = None
    context_overflow: bool = False
    fatal: bool = False
    throttled: bool = False
    """The server asked us to slow down: a 429, or a 503/529 that says it is overloaded."""


def classify(err: BaseException) -> _Outcome:
    """Which failures are worth another attempt."""
    if isinstance(err, (openai.AuthenticationError, openai.PermissionDeniedError)):
        return _Outcome(retryable=False, fatal=True)
    if isinstance(err, openai.APIStatusError):
        headers = err.response.headers if err.response is not None else {}
        retry_after = retry_after_seconds(headers)
        if isinstance(err, openai.RateLimitError):
            # OpenAI also answers 429 when the account has no quota left: waiting will not fix that.
            quota = getattr(err, "code", None) == "insufficient_quota"
            return _Outcome(retryable=not quota, retry_after=retry_after, throttled=not quota)
        if err.status_code >= 500 or err.status_code in (408, 409, 425):
            overloaded = err.status_code == 529 or (err.status_code == 503 and "overload" in str(err.message).lower())
            return _Outcome(retryable=True, retry_after=retry_after, throttled=overloaded)
        if err.status_code in (400, 413, 422) and _CONTEXT_OVERFLOW.search(f"{getattr(err, 'code', '')} {err.message}"):
            return _Outcome(retryable=False, context_overflow=True)
        return _Outcome(retryable=False)
    if isinstance(err, (openai.APIConnectionError, openai.APIResponseValidationError, MalformedResponse,
                        json.JSONDecodeError, UnicodeDecodeError, pydantic.ValidationError)):
        return _Outcome(retryable=True)  # timeouts, resets, garbage bodies
    return _Outcome(retryable=False)


def scrub(message: str, api_key: str) -> str:
    """Error texts can echo (part of) a key; none of it may reach the store or a log."""
    if api_key and api_key != NO_KEY:
        message = message.replace(api_key, "***")
    return _KEY_LIKE.sub("sk-***", message)


def truncate(request: ChatRequest, keep_fraction: float) -> ChatRequest:
    """Cut the longest message to `keep_fraction` of its characters (its start is kept)."""
    i = max(range(len(request.messages)), key=lambda j: len(request.messages[j][1]))
    role, content = request.messages[i]
    msgs = list(request.messages)
    msgs[i] = (role, content[: int(len(content) * keep_fraction)])
    return replace(request, messages=tuple(msgs))


def parse_completion(body: Any) -> tuple[str, str | None, int, int]:
    """Text, finish reason and token counts of a chat completion's JSON body; anything else is malformed."""
    choices = body.get("choices") if isinstance(body, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise MalformedResponse("response has no choices")
    message = choices[0].get("message")
    text = message.get("content") if isinstance(message, dict) else None
    finish = choices[0].get("finish_reason")
    if not isinstance(text, str) or not text.strip():
        raise MalformedResponse(f"empty completion (finish_reason {finish!r})")
    usage = body.get("usage") if isinstance(body.get("usage"), dict) else {}
    try:
        pt, ct = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
    except (TypeError, ValueError):
        raise MalformedResponse(f"usage is not a pair of token counts: {usage!r}") from None
    return text, finish if isinstance(finish, str) else None, pt, ct


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
    tasks share budgets through the orchestrator's concurrency limits."""

    def __init__(self, endpoint: Endpoint, store: ResponseStore, accounting: Accounting | None = None,
                 rng: random.Random | None = None):
        self.endpoint = endpoint
        self.store = store
        self.accounting = accounting or Accounting()
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
        limiter = RateLimiter(limits.requests_per_minute, limits.tokens_per_minute)
        call = StoredCall(role=ep.role, stage=stage, endpoint=ep.endpoint_id, model=ep.model)
        breaker = _Breaker(retry.unreachable_after)

        async def worker(client: openai.AsyncOpenAI, limit: int | None = None) -> None:
            while not fatal and not breaker.open and (limit is None or limit > 0):
                limit = None if limit is None else limit - 1
                try:
                    k = todo.get_nowait()
                except asyncio.QueueEmpty:
                    return
                try:
                    results[k] = await self._ask(client, limiter, call, k, unique[k], stage, breaker)
                except EndpointRejected as err:
                    fatal.append(err)
                    return
                except _NotSent:
                    return
                progress.update(results[k].ok)

        try:
            if todo.qsize():
                async with openai.AsyncOpenAI(base_url=ep.base_url, api_key=ep.api_key, max_retries=0,
                                              timeout=retry.request_timeout_s) as client:
                    # One request goes alone first: a rejected key costs one call, not one per worker,
                    # and the client's first-call set-up does not squeeze the paced requests together.
                    await worker(client, limit=1)
                    n_workers = min(limits.max_concurrency, todo.qsize())
                    workers = [asyncio.ensure_future(worker(client)) for _ in range(n_workers)]
                    try:
                        await asyncio.gather(*workers)
                    except BaseException:
                        # One worker failed (the store's disk full, say) or the batch was cancelled: the
                        # others stop too, before the client and the store close under them.
                        for w in workers:
                            w.cancel()
                        await asyncio.gather(*workers, return_exceptions=True)
                        raise
        finally:
            progress.close()
        done = sum(1 for k in unique if k in results)
        if fatal:
            raise EndpointRejected(f"{fatal[0]} ({done} of {len(unique)} requests answered or recorded; the rest not sent)")
        if breaker.open:
            raise EndpointUnreachable(
                f"{ep.role}: {ep.base_url} is unreachable: {breaker.streak} connection failures in a row (last "
                f"{breaker.last}); {done} of {len(unique)} requests answered or recorded, the rest not sent")
        return [replace(results[k], tag=r.tag) for k, r in zip(keys, requests)]

    async def _ask(self, client: openai.AsyncOpenAI, limiter: RateLimiter, call: StoredCall, key: str,
                   request: ChatRequest, stage: str, breaker: _Breaker) -> ChatResult:
        ep, cfg = self.endpoint, self.endpoint.config
        usage = self.accounting.row(ep.role, stage)
        prior = self.store.previous_attempts(key)
        current, truncated = request, False
        attempts, error_class, error_message = 0, "", ""
        while attempts < cfg.retry.max_attempts:
            est = current.estimated_tokens()
            await limiter.acquire(est)
            if breaker.open:
                limiter.settle(est, 0)
                if not attempts:
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
                text, finish, pt, ct = parse_completion(raw.json())
            except Exception as err:  # noqa: BLE001 - every failure is classified and recorded
                limiter.settle(est, 0)
                outcome = classify(err)
                error_class = type(err).__name__
                error_message = scrub(str(err), ep.api_key)[:2000]
                breaker.record(err, error_message)
                if outcome.fatal:
                    raise EndpointRejected(
                        f"{ep.role}: {ep.base_url} rejected the request: {error_class}: {error_message}") from None
                if outcome.context_overflow and cfg.context_overflow == "truncate" and not truncated:
                    current, truncated = truncate(current, cfg.truncate_keep_fraction), True
                    continue
                if not outcome.retryable or breaker.open:
                    break
                if outcome.throttled:
                    limiter.on_throttle()
                if outcome.retry_after is not None:
                    limiter.pause(outcome.retry_after)
                if attempts < cfg.retry.max_attempts:
                    await asyncio.sleep(self._backoff(attempts, outcome.retry_after))
                continue
            limiter.settle(est, pt + ct if pt + ct else est)
            limiter.on_success()
            breaker.record(None)
            result = ChatResult(key=key, ok=True, text=text, finish_reason=finish, prompt_tokens=pt,
                                completion_tokens=ct, attempts=prior + attempts, truncated=truncated)
            self.store.put_success(call, request, result, latency_s=time.monotonic() - started)
            self.accounting.add_tokens(ep.role, stage, pt, ct, cfg.price)
            return result
        usage.failures += 1
        result = ChatResult(key=key, ok=False, attempts=prior + attempts, error_class=error_class,
                            error_message=error_message, truncated=truncated)
        self.store.put_failure(call, request, result)
        return result

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return retry_after * (1 + 0.1 * self._rng.random())
        r = self.endpoint.config.retry
        base = min(r.max_backoff_s, r.initial_backoff_s * 2 ** (attempt - 1))
        return base * (0.5 + 0.5 * self._rng.random())
