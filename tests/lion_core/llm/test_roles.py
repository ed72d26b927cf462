import pytest

from lion_core.config import parse_config
from lion_core.errors import ConfigError
from lion_core.llm import ChatRequest
from lion_core.llm.fault_server import FaultServer
from lion_core.llm.roles import role_gateways


def _config(tmp_path, url, key_env=None):
    role = {"base_url": url, "model": "m", "api_key_env": key_env}
    return parse_config({"teacher": role, "referee": role, "generator": role,
                         "storage": {"runs_root": str(tmp_path / "runs")}})


def test_three_roles_share_one_store_and_one_accounting(tmp_path):
    with FaultServer() as srv, role_gateways(_config(tmp_path, srv.url)) as gws:
        assert set(gws) == {"teacher", "referee", "generator"}
        assert len({id(g.store) for g in gws.values()}) == 1 and len({id(g.accounting) for g in gws.values()}) == 1
        gws["teacher"].run_sync([ChatRequest.of([("user", "a")])], "imitation")
        gws["referee"].run_sync([ChatRequest.of([("user", "b")])], "discrimination")
        table = gws["referee"].accounting.table()
        assert [(r["role"], r["stage"], r["requests"]) for r in table] == [
            ("referee", "discrimination", 1), ("teacher", "imitation", 1)]
    assert (tmp_path / "runs" / "responses.sqlite").is_file()


def test_a_missing_key_fails_before_anything_starts(tmp_path, monkeypatch):
    monkeypatch.delenv("LION_ABSENT_KEY", raising=False)
    with pytest.raises(ConfigError, match="teacher.api_key_env: environment variable LION_ABSENT_KEY"):
        with role_gateways(_config(tmp_path, "http://127.0.0.1:9/v1", key_env="LION_ABSENT_KEY")):
            pass
    assert not (tmp_path / "runs").exists()
