"""The embedded servers of a run: only those its roles need, reused by nested flows, and released
(stopped, then started on the same ports) while the student trains."""

import httpx
import pytest

from lion_core.config import EMBEDDED_CHAT_MODEL, STANDIN_GENERATOR, STANDIN_REFEREE
from lion_core.llm.embedded import EmbeddedServers, embedded_servers, released_for_training

pytestmark = pytest.mark.slow


def _up(base_url: str) -> bool:
    try:
        return httpx.get(base_url.removesuffix("/v1") + "/health", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def test_stand_ins_alone_start_one_server_released_for_training_and_back_on_the_same_port():
    assert len(EmbeddedServers({EMBEDDED_CHAT_MODEL, STANDIN_REFEREE}).servers) == 2
    with released_for_training():  # outside a run: nothing to release
        pass
    with embedded_servers({STANDIN_REFEREE}) as servers:
        assert len(servers.servers) == 1
        endpoints = servers.endpoints()
        assert set(endpoints) == {STANDIN_REFEREE, STANDIN_GENERATOR}
        url = endpoints[STANDIN_REFEREE][0]
        pid = servers.servers[0].pid
        with embedded_servers({STANDIN_GENERATOR}) as nested:  # a sub-flow's roles: the run's servers serve them
            assert nested is servers
        assert _up(url)
        with released_for_training():
            assert not _up(url)
        assert _up(url) and servers.endpoints() == endpoints and servers.servers[0].pid != pid
    assert not _up(url)
