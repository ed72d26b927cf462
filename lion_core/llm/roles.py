"""Gateways for the three API roles of a run, sharing one response store, one accounting table and,
when any role points at it, one embedded server."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from lion_core.config import EMBEDDED, RunConfig
from lion_core.llm.accounting import Accounting
from lion_core.llm.embedded import EmbeddedServer
from lion_core.llm.gateway import Endpoint, Gateway
from lion_core.llm.responses import ResponseStore

ROLES = ("teacher", "referee", "generator")


@contextmanager
def role_gateways(
    config: RunConfig, store: ResponseStore | None = None, accounting: Accounting | None = None,
    server: EmbeddedServer | None = None,
) -> Iterator[dict[str, Gateway]]:
    """Yield {role: Gateway}. Keys are checked before anything starts; a server started here is stopped here."""
    cfgs = {role: getattr(config, role) for role in ROLES}
    for role, cfg in cfgs.items():
        if cfg.base_url != EMBEDDED:
            Endpoint.from_config(role, cfg)  # fail on a missing key before starting anything
    own_server = server is None and any(cfg.base_url == EMBEDDED for cfg in cfgs.values())
    own_store = store is None
    if own_server:
        server = EmbeddedServer().start()
    try:
        store = store or ResponseStore(config.storage.response_store_path())
        accounting = accounting or Accounting()
        embedded = server.endpoint if server is not None and server.port else None
        yield {role: Gateway(Endpoint.from_config(role, cfg, embedded=embedded if cfg.base_url == EMBEDDED else None),
                             store, accounting)
               for role, cfg in cfgs.items()}
    finally:
        if own_store and store is not None:
            store.close()
        if own_server and server is not None:
            server.stop()
