import pytest


@pytest.fixture(params=["sqlite", "postgresql"])
def store_location(request, tmp_path) -> str:
    """Where a response store under test lives: a SQLite file, or a fresh database on the tests' own
    PostgreSQL server (its password in LION_STORE_PASSWORD). The store's contract holds on both."""
    if request.param == "sqlite":
        return str(tmp_path / "responses.sqlite")
    return request.getfixturevalue("postgres_url")
