"""Per role and stage: requests, calls, retries, failures, tokens and cost, as a table a flow can publish."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from lion_core.config import Price


@dataclass
class Usage:
    role: str
    stage: str
    requests: int = 0
    """Requests asked for (after removing duplicates within a batch)."""
    cached: int = 0
    """Of those, answered from the response store without a call."""
    calls: int = 0
    """HTTP attempts made."""
    retries: int = 0
    failures: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0


class Accounting:
    def __init__(self) -> None:
        self._rows: dict[tuple[str, str], Usage] = {}

    def row(self, role: str, stage: str) -> Usage:
        return self._rows.setdefault((role, stage), Usage(role, stage))

    def add_tokens(self, role: str, stage: str, prompt: int, completion: int, price: Price) -> None:
        u = self.row(role, stage)
        u.prompt_tokens += prompt
        u.completion_tokens += completion
        u.cost_usd += (prompt * price.prompt_per_million + completion * price.completion_per_million) / 1e6

    def table(self) -> list[dict]:
        return [asdict(u) for _, u in sorted(self._rows.items())]

    def markdown(self) -> str:
        head = ("| role | stage | requests | cached | calls | retries | failures | prompt tokens | completion tokens "
                "| cost (USD) |")
        lines = [head, "|" + "---|" * 10]
        for u in (Usage(**r) for r in self.table()):
            lines.append(
                f"| {u.role} | {u.stage} | {u.requests} | {u.cached} | {u.calls} | {u.retries} | {u.failures} "
                f"| {u.prompt_tokens} | {u.completion_tokens} | {u.cost_usd:.4f} |"
            )
        return "\n".join(lines)
