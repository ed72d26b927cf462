"""What an endpoint's reply says: a chat completion's text and usage, or a failure classified by what to
do about it (retry, stop, cut the prompt, slow down), with any echo of the API key scrubbed.

A reply can be paid for and still be of no use: an empty completion, or one ended by a finish reason
the role does not accept (a content filter's refusal). `UnusableReply` carries its token counts, so
its cost is counted, and the gateway gives such replies a small budget of their own instead of
retrying them like a dropped connection.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from typing import Any

import openai
import pydantic

from lion_core.llm.ratelimit import retry_after_seconds
from lion_core.llm.requests import ChatRequest

_CONTEXT_OVERFLOW = re.compile(
    r"context[_ ]length|maximum context|context window|too many tokens|prompt is too long|reduce the length",
    re.IGNORECASE,
)
_KEY_LIKE = re.compile(r"\b(sk-|sk_)[A-Za-z0-9_\-*]{4,}")
NO_KEY = "no-key"  # the SDK wants some key; local endpoints ignore it


class MalformedResponse(Exception):
    """A 2xx answer that is not a usable chat completion."""


UNUSABLE = "UnusableReply"
"""The error class a request is recorded with once its budget of unusable replies is spent."""


class UnusableReply(MalformedResponse):
    """A well-formed, paid completion that cannot be used: empty, a refusal, or an invalid finish reason."""

    def __init__(self, message: str, prompt_tokens: int, completion_tokens: int):
        super().__init__(message)
        self.prompt_tokens, self.completion_tokens = prompt_tokens, completion_tokens


@dataclass(frozen=True)
class Outcome:
    retryable: bool
    retry_after: float | None = None
    context_overflow: bool = False
    fatal: bool = False
    throttled: bool = False
    """The server asked us to slow down: a 429, or a 503/529 that says it is overloaded."""


def classify(err: BaseException) -> Outcome:
    """Which failures are worth another attempt."""
    if isinstance(err, (openai.AuthenticationError, openai.PermissionDeniedError)):
        return Outcome(retryable=False, fatal=True)
    if isinstance(err, openai.APIStatusError):
        headers = err.response.headers if err.response is not None else {}
        retry_after = retry_after_seconds(headers)
        if isinstance(err, openai.RateLimitError):
            # OpenAI also answers 429 when the account has no quota left: waiting will not fix that.
            quota = getattr(err, "code", None) == "insufficient_quota"
            return Outcome(retryable=not quota, retry_after=retry_after, throttled=not quota)
        if err.status_code >= 500 or err.status_code in (408, 409, 425):
            overloaded = err.status_code == 529 or (err.status_code == 503 and "overload" in str(err.message).lower())
            return Outcome(retryable=True, retry_after=retry_after, throttled=overloaded)
        if err.status_code in (400, 413, 422) and _CONTEXT_OVERFLOW.search(f"{getattr(err, 'code', '')} {err.message}"):
            return Outcome(retryable=False, context_overflow=True)
        return Outcome(retryable=False)
    if isinstance(err, (openai.APIConnectionError, openai.APIResponseValidationError, MalformedResponse,
                        json.JSONDecodeError, UnicodeDecodeError, pydantic.ValidationError)):
        return Outcome(retryable=True)  # timeouts, resets, garbage bodies
    return Outcome(retryable=False)


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


def parse_completion(body: Any, invalid_finish_reasons: tuple[str, ...] = ()) -> tuple[str, str | None, int, int]:
    """Text, finish reason and token counts of a chat completion's JSON body; a paid reply of no use is
    `UnusableReply`; anything else is malformed."""
    choices = body.get("choices") if isinstance(body, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise MalformedResponse("response has no choices")
    message = choices[0].get("message")
    text = message.get("content") if isinstance(message, dict) else None
    finish = choices[0].get("finish_reason")
    usage = body.get("usage") if isinstance(body.get("usage"), dict) else {}
    try:
        pt, ct = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
    except (TypeError, ValueError):
        raise MalformedResponse(f"usage is not a pair of token counts: {usage!r}") from None
    finish = finish if isinstance(finish, str) else None
    if not isinstance(text, str) or not text.strip():
        refusal = message.get("refusal") if isinstance(message, dict) else None
        why = f"refusal: {refusal[:200]}" if isinstance(refusal, str) and refusal else "empty completion"
        raise UnusableReply(f"{why} (finish_reason {finish!r})", pt, ct)
    if finish in invalid_finish_reasons:
        raise UnusableReply(f"finish_reason {finish!r} is not accepted (retry.invalid_finish_reasons)", pt, ct)
    return text, finish, pt, ct
