"""The response store's password from a Prefect Secret block."""

import os

from lion_core.config import parse_config
from lion_core.llm import ResponseStore
from lion_prefect.secrets import export_store_password


def test_the_store_password_comes_from_a_secret_block_when_its_variable_is_unset(prefect_harness, postgres_url,
                                                                                  postgres_server, monkeypatch):
    from prefect.blocks.system import Secret

    monkeypatch.delenv("LION_STORE_PASSWORD")
    Secret(value=postgres_server.password).save("lion-store-test", overwrite=True)
    cfg = parse_config({"storage": {"response_store": postgres_url, "password_env": "LION_TEST_STORE_PW",
                                    "password_secret": "lion-store-test"}})
    monkeypatch.delenv("LION_TEST_STORE_PW", raising=False)
    assert export_store_password(cfg.storage)
    assert os.environ["LION_TEST_STORE_PW"] == postgres_server.password
    with ResponseStore.open(cfg.storage) as store:
        assert store.counts() == {}
    assert not export_store_password(cfg.storage)  # already set: the environment wins
    monkeypatch.delenv("LION_TEST_STORE_PW")
    missing = parse_config({"storage": {"response_store": postgres_url, "password_env": "LION_TEST_STORE_PW",
                                        "password_secret": "no-such-block"}})
    assert not export_store_password(missing.storage) and "LION_TEST_STORE_PW" not in os.environ
