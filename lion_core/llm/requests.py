"""Chat requests, their stable keys, and results."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ChatRequest:
    """One chat completion to ask for. `tag` is the caller's label (e.g. an instruction id), not part of the key."""

    messages: tuple[tuple[str, str], ...]  # (role, content) pairs
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int | None = None
    sample_index: int = 0
    """Distinguishes deliberate repeated samples of the same prompt; identical requests share one answer."""
    draw_scope: str = ""
    """Where a deliberate sample belongs (the generator's iteration): the same prompt and sample index in
    another scope is a fresh draw, not a stored reply. Empty for requests whose answer is reused anywhere."""
    tag: str = field(default="", compare=False)

    @classmethod
    def of(cls, messages: list[dict[str, str]] | list[tuple[str, str]], **kw: Any) -> ChatRequest:
        pairs = tuple((m["role"], m["content"]) if isinstance(m, dict) else (m[0], m[1]) for m in messages)
        return cls(messages=pairs, **kw)

    def api_messages(self) -> list[dict[str, str]]:
        return [{"role": r, "content": c} for r, c in self.messages]

    def params(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "top_p": self.top_p, "max_tokens": self.max_tokens}

    def key(self, endpoint_id: str, model: str) -> str:
        """sha256 of (endpoint, model, messages, sampling parameters, sample index and scope); never the API key."""
        identity: dict[str, Any] = {"endpoint": endpoint_id, "model": model, "messages": self.messages,
                                    "params": self.params(), "sample": self.sample_index}
        if self.draw_scope:  # absent otherwise, so keys of unscoped requests never change
            identity["scope"] = self.draw_scope
        canonical = json.dumps(identity, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(canonical.encode()).hexdigest()

    def estimated_tokens(self) -> int:
        """Tokens this request may count against a TPM budget: prompt (about 4 chars a token) plus max_tokens."""
        prompt = sum(len(c) for _, c in self.messages) // 4 + 4 * len(self.messages) + 3
        return prompt + (self.max_tokens or 256)


@dataclass(frozen=True)
class ChatResult:
    key: str
    ok: bool
    text: str | None = None
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    attempts: int = 0
    """HTTP attempts this request has cost in total, over every run."""
    error_class: str | None = None
    error_message: str | None = None
    cached: bool = False
    """Served from the response store: no call was made for it now."""
    truncated: bool = False
    """The prompt was cut after a context-length error."""
    unusable: int = 0
    """Paid replies that could not be used (empty, or an invalid finish reason), over every run."""
    tag: str = ""
