"""The LLM gateway: rate-limited, crash-proof fan-out of chat requests to OpenAI-compatible endpoints."""

from lion_core.llm.accounting import Accounting
from lion_core.llm.gateway import ChatGateway, Endpoint, Gateway
from lion_core.llm.requests import ChatRequest, ChatResult
from lion_core.llm.responses import ResponseStore

__all__ = ["Accounting", "ChatGateway", "ChatRequest", "ChatResult", "Endpoint", "Gateway", "ResponseStore"]
