import pytest


@pytest.fixture(scope="session")
def server(embedded):
    """The session's embedded chat server, for every integration test that only sends requests."""
    return embedded.servers[0]


@pytest.fixture(scope="session")
def standin(embedded):
    """The offline referee and generator stand-ins' server."""
    return embedded.servers[1]


@pytest.fixture(scope="session")
def endpoints(embedded):
    """{embedded model: endpoint} for every embedded model, as a run's roles get them."""
    return embedded.endpoints()
