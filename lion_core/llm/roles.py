"""The embedded servers a run's API roles point at, started once and shared by every task."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from lion_core.config import EMBEDDED, RunConfig

RUN_ROLES = ("teacher", "referee", "generator")
"""The API roles of the Lion loop (evaluations add `reference` and `judge`)."""


@contextmanager
def embedded_endpoints(config: RunConfig, roles: tuple[str, ...] = RUN_ROLES) -> Iterator[dict[str, tuple[str, str]] | None]:
    """{embedded model: endpoint} of the servers the given roles need (none: None); stopped (or killed
    with us) after, released while the student trains, and reused by a nested caller."""
    from lion_core.limits import role_config
    from lion_core.llm.embedded import embedded_servers

    models = {role_config(config, r).model for r in roles if role_config(config, r).base_url == EMBEDDED}
    with embedded_servers(models) as servers:
        yield servers.endpoints() if servers is not None else None
