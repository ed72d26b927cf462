"""orchestration.result_storage becomes a storage block on a real (test) Prefect API."""

import pytest
from prefect.blocks.core import Block

from lion_core.config import parse_config
from lion_core.errors import ConfigError
from tasks.results import result_storage, storage_block_name


def _cfg(location):
    return parse_config({"orchestration": {"result_storage": location}})


def test_a_uri_is_saved_as_a_remote_block_under_a_stable_name(prefect_harness):
    slug = result_storage.fn(_cfg("s3://bucket/lion/results"))
    assert slug == f"remote-file-system/{storage_block_name('s3://bucket/lion/results')}"
    assert Block.load(slug, _sync=True).basepath == "s3://bucket/lion/results"
    assert result_storage.fn(_cfg("s3://bucket/lion/results")) == slug  # saved again, same block
    assert result_storage.fn(_cfg("s3://bucket/other")) != slug


def test_a_path_is_a_local_block_a_slug_is_passed_through_none_is_prefects_default(prefect_harness, tmp_path):
    slug = result_storage.fn(_cfg(str(tmp_path / "results")))
    assert slug.startswith("local-file-system/") and Block.load(slug, _sync=True).basepath == str(tmp_path / "results")
    assert result_storage.fn(_cfg("s3-bucket/my-results")) == "s3-bucket/my-results"
    assert result_storage.fn(parse_config({})) is None


@pytest.mark.parametrize("bad", ["results", "relative/path/here", "s3-bucket/"])
def test_a_location_that_is_neither_is_refused_naming_the_field(bad):
    with pytest.raises(ConfigError, match="orchestration.result_storage"):
        _cfg(bad)
