from types import SimpleNamespace

import pandas as pd
import pytest

from lion_core.config import parse_config
from lion_core.errors import ConfigError, IntegrityError, ShardIncomplete, StageIncomplete
from lion_core.llm.gateway import EndpointRejected, EndpointUnreachable
from lion_core.store import PoolRef
from lion_core.student.launch import TrainingError
from tasks.common import RunContext, input_cache_key, transient


def _ctx(embedded=None, **cfg):
    return RunContext(config=parse_config(cfg), run_id="r", run_key="/runs/r@2026-01-01", embedded=embedded)


def _key(name="teacher-answers-shard", **params):
    return input_cache_key(SimpleNamespace(task=SimpleNamespace(name=name)), params)


POOL = PoolRef(uri="/runs/r/iter-0/train_pool.parquet", sha256="a" * 64, rows=10, schema_version="pool/1")


def test_cache_key_depends_on_content_config_and_run_not_on_the_server_port():
    base = _key(ctx=_ctx(), k=0, pool=POOL, lo=0, hi=4)
    elsewhere = _ctx(embedded={"smollm2-135m-instruct": ("http://127.0.0.1:5555/v1", "m")})
    assert base == _key(ctx=elsewhere, k=0, pool=POOL, lo=0, hi=4)
    moved = POOL.model_copy(update={"uri": "/elsewhere/train_pool.parquet"})
    assert base == _key(ctx=_ctx(), k=0, pool=moved, lo=0, hi=4)  # content, not location
    assert base != _key(ctx=_ctx(), k=0, pool=POOL.model_copy(update={"sha256": "b" * 64}), lo=0, hi=4)
    assert base != _key(ctx=_ctx(), k=0, pool=POOL, lo=4, hi=8)
    assert base != _key(ctx=_ctx(loop={"tau": 2.0}), k=0, pool=POOL, lo=0, hi=4)
    other_run = RunContext(config=parse_config({}), run_id="r", run_key="/runs/r@2026-02-02")
    assert base != _key(ctx=other_run, k=0, pool=POOL, lo=0, hi=4)
    assert base != _key(name="judgments-shard", ctx=_ctx(), k=0, pool=POOL, lo=0, hi=4)


def test_a_typed_input_counts_its_pool_refs_by_content_not_location():
    from lion_core.results import Shard

    shard = Shard(k=0, name="judgments", pool=POOL, index=0, lo=0, hi=4)
    moved = shard.model_copy(update={"pool": POOL.model_copy(update={"uri": "/elsewhere/train_pool.parquet"})})
    assert _key(ctx=_ctx(), shard=shard) == _key(ctx=_ctx(), shard=moved)
    assert _key(ctx=_ctx(), shard=shard) != _key(ctx=_ctx(), shard=shard.model_copy(update={"hi": 5}))
    changed = shard.model_copy(update={"pool": POOL.model_copy(update={"sha256": "b" * 64})})
    assert _key(ctx=_ctx(), shard=shard) != _key(ctx=_ctx(), shard=changed)


def test_data_objects_are_refused_as_task_inputs():
    with pytest.raises(TypeError, match="references or scalars, not DataFrame"):
        _key(ctx=_ctx(), rows=pd.DataFrame({"a": [1]}))


@pytest.mark.parametrize("error, retry", [
    (ShardIncomplete("3 of 4 failed"), True), (StageIncomplete("3 of 40 items"), True),
    (TrainingError("rank died"), True), (OSError("disk"), True),
    (ConnectionError("reset"), True), (EndpointUnreachable("refused"), True), (ConfigError("bad field"), False),
    (IntegrityError("hash"), False), (EndpointRejected("bad key"), False),
])
def test_only_transient_failures_are_retried(error, retry):
    class State:
        def result(self):
            raise error

    assert transient(None, None, State()) is retry
