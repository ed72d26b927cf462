"""Per role and stage: requests, calls, retries, failures, tokens and cost, as a table a flow can publish."""

from __future__ import annotations

from pydantic import ConfigDict

from lion_core.config import Price
from lion_core.results import UsageRow


class Usage(UsageRow):
    """A row being counted: the fields of UsageRow, mutable while the gateway adds to them."""

    model_config = ConfigDict(frozen=False, extra="forbid")


class Accounting:
    def __init__(self) -> None:
        self._rows: dict[tuple[str, str, str], Usage] = {}

    def row(self, role: str, stage: str, mode: str = "interactive") -> Usage:
        return self._rows.setdefault((role, stage, mode), Usage(role=role, stage=stage, mode=mode))

    def add_tokens(self, role: str, stage: str, prompt: int, completion: int, price: Price,
                   mode: str = "interactive") -> None:
        u = self.row(role, stage, mode)
        u.prompt_tokens += prompt
        u.completion_tokens += completion
        u.cost_usd += (prompt * price.prompt_per_million + completion * price.completion_per_million) / 1e6

    def table(self) -> list[UsageRow]:
        """The rows so far, frozen, sorted by role, stage, then mode."""
        return [UsageRow(**u.model_dump()) for _, u in sorted(self._rows.items())]

    def markdown(self) -> str:
        head = ("| role | stage | mode | requests | cached | calls | retries | failures | prompt tokens | completion tokens "
                "| cost (USD) |")
        lines = [head, "|" + "---|" * 11]
        for u in self.table():
            lines.append(
                f"| {u.role} | {u.stage} | {u.mode} | {u.requests} | {u.cached} | {u.calls} | {u.retries} | {u.failures} "
                f"| {u.prompt_tokens} | {u.completion_tokens} | {u.cost_usd:.4f} |"
            )
        return "\n".join(lines)
