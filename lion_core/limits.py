"""Shared API budgets: one global concurrency limit per API key, with a slot per shard in flight.

Every run and worker that uses the same key acquires slots of the same limit, and each shard paces
its own requests at the key's limits divided by the number of slots, so together they stay within the
key's budget however many flows run. The limit's name carries 12 hex digits of the key's sha256 (never
the key), so two environment variable names holding one key still share one budget.
"""

from __future__ import annotations

import hashlib
import math
import os

from lion_core.config import EMBEDDED, ApiRole, RunConfig
from lion_core.errors import ConfigError

ROLES = ("teacher", "referee", "generator", "reference", "judge")

GPU_TAG = "gpu"
"""The tag of the tasks that use the node's GPUs (the fine-tune, the student's answers)."""
GPU_LIMIT = f"tag:{GPU_TAG}"
"""Prefect keeps a tag's concurrency limit as the global limit of this name, held under a lease by each
task run with the tag, so a killed run's slot comes back when its lease expires."""


def role_config(config: RunConfig, role: str) -> ApiRole:
    """The endpoint settings of a role; `reference` and `judge` are the evaluation's (the judge
    defaults to the run's referee)."""
    if role == "reference":
        return config.evaluation.reference
    if role == "judge":
        return config.evaluation.judge or config.referee
    return getattr(config, role)


def limit_name(role: ApiRole, env: dict[str, str] | None = None) -> str:
    if role.base_url == EMBEDDED:
        return "lion-api-embedded"
    env = os.environ if env is None else env
    key = env.get(role.api_key_env, "") if role.api_key_env else ""
    if role.api_key_env and not key:
        raise ConfigError(f"${role.api_key_env} is not set: the rate-limit name is derived from the key it holds")
    digest = hashlib.sha256(f"{role.base_url.rstrip('/')}\0{key}".encode()).hexdigest()[:12]
    return f"lion-api-{digest}"


def api_limits(config: RunConfig, env: dict[str, str] | None = None) -> dict[str, dict]:
    """{limit name: {"slots": n, "roles": [...]}} for the config's API roles."""
    out: dict[str, dict] = {}
    for role in ROLES:
        name = limit_name(role_config(config, role), env)
        entry = out.setdefault(name, {"slots": config.orchestration.shards_in_flight_per_key, "roles": []})
        entry["roles"].append(role)
    return out


def shard_role(role: ApiRole, slots: int) -> ApiRole:
    """The role's settings for one shard: its share of the key's requests, tokens and connections."""
    r = role.rate_limits
    share = r.model_copy(update={
        "requests_per_minute": max(1, r.requests_per_minute // slots),
        "tokens_per_minute": max(1, r.tokens_per_minute // slots),
        "max_concurrency": max(1, math.ceil(r.max_concurrency / slots)),
    })
    return role.model_copy(update={"rate_limits": share})
