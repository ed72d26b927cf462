import pytest

from lion_core.llm.embedded import EmbeddedServer


@pytest.fixture(scope="session")
def server(model_dir):
    """One embedded server for every integration test that only sends requests."""
    with EmbeddedServer(model_dir) as srv:
        yield srv
