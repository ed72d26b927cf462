import pytest

from lion_core.config import parse_config
from lion_core.errors import ConfigError
from lion_core.limits import api_limits, limit_name, shard_role

API = {"base_url": "https://api.example.com/v1", "model": "m", "api_key_env": "KEY_A",
       "rate_limits": {"requests_per_minute": 3500, "tokens_per_minute": 90000, "max_concurrency": 16}}


def test_roles_on_one_key_share_one_limit_and_the_key_never_appears():
    cfg = parse_config({"teacher": API, "referee": {**API, "api_key_env": "KEY_B"}, "generator": API,
                        "orchestration": {"shards_in_flight_per_key": 3}})
    env = {"KEY_A": "sk-secret-one", "KEY_B": "sk-secret-one"}
    limits = api_limits(cfg, env)
    # the evaluation's judge defaults to the referee; its reference model defaults to the embedded one
    assert list(limits.values()) == [{"slots": 3, "roles": ["teacher", "referee", "generator", "judge"]},
                                     {"slots": 3, "roles": ["reference"]}]
    name = next(iter(limits))
    assert name.startswith("lion-api-") and "secret" not in name and "lion-api-embedded" in limits
    other = api_limits(cfg, {"KEY_A": "sk-other", "KEY_B": "sk-secret-one"})
    assert len(other) == 3  # two keys, two budgets (and the embedded one)


def test_a_missing_key_is_a_clear_error():
    cfg = parse_config({"teacher": API})
    with pytest.raises(ConfigError, match=r"\$KEY_A is not set"):
        limit_name(cfg.teacher, {})


def test_embedded_roles_share_the_embedded_limit():
    cfg = parse_config({})
    assert set(api_limits(cfg, {})) == {"lion-api-embedded"}


def test_a_shard_paces_at_its_share_of_the_key():
    cfg = parse_config({"teacher": API})
    share = shard_role(cfg.teacher, 3).rate_limits
    assert (share.requests_per_minute, share.tokens_per_minute, share.max_concurrency) == (1166, 30000, 6)
    assert shard_role(cfg.teacher, 3).model == "m" and cfg.teacher.rate_limits.requests_per_minute == 3500
