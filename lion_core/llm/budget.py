"""The run's spending caps, kept request by request: a request goes only when what the run has paid (the
response store's `spend` table, shared by every process of the run) plus what its requests in flight
may cost (this process's reservations) plus its own worst case stays within every cap.

A request's worst case is its prompt estimate at the prompt price plus its max_tokens (or
`budget.estimated_reply_tokens`) at the completion price; the reply's usage then settles the
reservation at what it really cost. The caps bound the spend of the run's processes together up to the
requests other processes have in flight at that moment (at most their `max_concurrency` each).
"""

from __future__ import annotations

import threading
from collections import defaultdict

from lion_core.config import BudgetConfig, Price
from lion_core.errors import BudgetExhausted
from lion_core.llm.requests import ChatRequest
from lion_core.llm.responses import ResponseStore

# Reservations of the requests in flight in this process, per (store, run) and role: every gateway batch
# of a process runs on one event loop, but shards start their batches from several threads.
_lock = threading.Lock()
_in_flight: dict[tuple[str, str], defaultdict[str, float]] = defaultdict(lambda: defaultdict(float))


def cost_usd(prompt_tokens: float, completion_tokens: float, price: Price) -> float:
    return (prompt_tokens * price.prompt_per_million + completion_tokens * price.completion_per_million) / 1e6


def worst_case_usd(request: ChatRequest, price: Price, default_reply_tokens: int) -> float:
    prompt = request.estimated_tokens() - (request.max_tokens or 256)
    return cost_usd(prompt, request.max_tokens or default_reply_tokens, price)


class Budget:
    """One role's view of the run's caps. `reserve` before a request, `settle` after it."""

    def __init__(self, config: BudgetConfig, run_id: str, role: str, store: ResponseStore):
        self.config, self.run_id, self.role, self.store = config, run_id, role, store
        self._key = (store.location, run_id)
        self.refused = ""
        """Why a request was not sent (the first refusal), empty while none was."""

    def _checks(self, spent: dict[str, float], flying: dict[str, float]) -> list[tuple[str, float, float, float]]:
        """(cap's name, cap, paid, held in flight) for each cap that applies to this role."""
        cfg, out = self.config, []
        if cfg.max_cost_usd is not None:
            out.append(("budget.max_cost_usd", cfg.max_cost_usd, sum(spent.values()), sum(flying.values())))
        if self.role in cfg.per_role:
            out.append((f"budget.per_role.{self.role}", cfg.per_role[self.role], spent.get(self.role, 0.0),
                        flying.get(self.role, 0.0)))
        return out

    def _refuse(self, name: str, cap: float, spent: dict[str, float], amount: float, held: float) -> None:
        if not self.refused:
            by_role = ", ".join(f"{r} ${c:.4f}" for r, c in sorted(spent.items())) or "nothing"
            self.refused = (f"{name} (${cap:.2f}) reached: run {self.run_id} has spent ${sum(spent.values()):.4f} "
                            f"({by_role}); the next {self.role} request could cost up to ${amount:.4f} with "
                            f"${held:.4f} in flight")

    def reserve(self, amount: float) -> bool:
        """Hold `amount` for a request about to go; False (and `refused` says why) when a cap forbids it."""
        if not self.config.capped():
            return True
        with _lock:
            flying = _in_flight[self._key]
            spent = self.store.spent(self.run_id)
            for name, cap, paid, held in self._checks(spent, flying):
                if paid + held + amount > cap:
                    self._refuse(name, cap, spent, amount, held)
                    return False
            flying[self.role] += amount
        return True

    def affordable(self, costs: list[float], held: float) -> int:
        """How many of `costs` (worst cases, in order) fit within every cap, with `held` more committed
        elsewhere (a role's batches not yet collected); when not all, `refused` says why."""
        if not self.config.capped():
            return len(costs)
        spent = self.store.spent(self.run_id)
        room = min(cap - paid - flying - held for _, cap, paid, flying in self._checks(spent, {}))
        total = 0.0
        for n, c in enumerate(costs):
            if total + c > room:
                name, cap, _, _ = min(self._checks(spent, {}), key=lambda check: check[1] - check[2])
                self._refuse(name, cap, spent, c, held + total)
                return n
            total += c
        return len(costs)

    def settle(self, reserved: float, paid: float | None) -> None:
        """Release a reservation; `paid` (None: the reply was not paid for, a 5xx or a dropped connection)
        goes to the run's spend in the store."""
        if self.config.capped():
            with _lock:
                _in_flight[self._key][self.role] -= reserved
        if paid is not None:
            self.store.add_spend(self.run_id, self.role, paid)

    def exhausted(self, answered: int, total: int) -> BudgetExhausted:
        return BudgetExhausted(f"{self.refused}. {answered} of {total} {self.role} requests of this stage are answered "
                               f"and stored; the rest were not sent. Raise the cap in the config and continue with "
                               f"`lion run CONFIG --resume {self.run_id}`: nothing paid is asked again")
