"""Gateways for the three API roles of a run, sharing one response store, one accounting table and,
when any role points at it, one embedded server."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from lion_core.config import EMBEDDED, RunConfig
from lion_core.llm.accounting import Accounting
from lion_core.llm.embedded import EmbeddedServer, EmbeddedServers
from lion_core.llm.gateway import Endpoint, Gateway
from lion_core.llm.responses import ResponseStore

ROLES = ("teacher", "referee", "generator")


@contextmanager
def role_gateways(
    config: RunConfig, store: ResponseStore | None = None, accounting: Accounting | None = None,
    server: EmbeddedServer | EmbeddedServers | None = None,
) -> Iterator[dict[str, Gateway]]:
    """Yield {role: Gateway}. Keys are checked before anything starts; a server started here is stopped here."""
    cfgs = {role: getattr(config, role) for role in ROLES}
    for role, cfg in cfgs.items():
        if cfg.base_url != EMBEDDED:
            Endpoint.from_config(role, cfg)  # fail on a missing key before starting anything
    models = {cfg.model for cfg in cfgs.values() if cfg.base_url == EMBEDDED}
    own_server = server is None and bool(models)
    own_store = store is None
    if own_server:
        server = EmbeddedServers(models).start()
    try:
        store = store or ResponseStore(config.storage.response_store_path())
        accounting = accounting or Accounting()
        embedded = (server.endpoints() if isinstance(server, EmbeddedServers)
                    else server.endpoint if server is not None and server.port else None)
        yield {role: Gateway(Endpoint.from_config(role, cfg, embedded=embedded if cfg.base_url == EMBEDDED else None),
                             store, accounting)
               for role, cfg in cfgs.items()}
    finally:
        if own_store and store is not None:
            store.close()
        if own_server and server is not None:
            server.stop()


@contextmanager
def embedded_endpoints(config: RunConfig, roles: tuple[str, ...] = ROLES) -> Iterator[dict[str, tuple[str, str]] | None]:
    """{embedded model: endpoint} of the servers the given roles need (none: None); stopped (or killed
    with us) after, released while the student trains, and reused by a nested caller."""
    from lion_core.limits import role_config
    from lion_core.llm.embedded import embedded_servers

    models = {role_config(config, r).model for r in roles if role_config(config, r).base_url == EMBEDDED}
    with embedded_servers(models) as servers:
        yield servers.endpoints() if servers is not None else None
