import pytest

from lion_core.llm.embedded import EmbeddedServer


@pytest.fixture(scope="session")
def server(model_dir):
    """One embedded server for every integration test that only sends requests."""
    with EmbeddedServer(model_dir) as srv:
        yield srv


@pytest.fixture(scope="session")
def standin(model_dir):
    """The offline referee and generator stand-ins' server."""
    with EmbeddedServer(model_dir, standin=True) as srv:
        yield srv


@pytest.fixture(scope="session")
def endpoints(server, standin):
    """{embedded model: endpoint} for every embedded model, as a run's roles get them."""
    return {**server.endpoints(), **standin.endpoints()}
