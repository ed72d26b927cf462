"""A run whose pools and Prefect task results live on S3 (a real S3 API on loopback), resumed the way
a retried Docker or Kubernetes run is: in a process that has none of the first attempt's local files."""

import shutil
import uuid
from datetime import datetime, timezone
from pathlib import Path

import fsspec
import pytest
import yaml
from prefect.settings import temporary_settings

from flows.lion import lion
from lion_core.errors import EndpointDown
from lion_core.store import RunStore
from tests.fault_server import FaultPlan, FaultServer
from tests.flows.conftest import write_flow_config
from tests.helpers import task_runs

pytestmark = pytest.mark.slow


def test_a_run_on_s3_resumes_from_its_remote_task_results(prefect_harness, tiny_model, s3_bucket, tmp_path):
    prefix = f"{s3_bucket}/flow-{uuid.uuid4().hex[:8]}"
    s3 = fsspec.filesystem("s3")

    # 6 teacher answers, then the referee fails after 2 verdicts: the flow run fails mid-discrimination
    container_disk = tmp_path / "container-disk"
    with FaultServer(FaultPlan(fail_after=8)) as api, \
            temporary_settings(updates={"results.local_storage_path": container_disk}):
        config = write_flow_config(tmp_path, api.url, tiny_model, iterations=1)
        data = yaml.safe_load(config.read_text())
        data["storage"] = {"runs_root": f"{prefix}/runs",
                           "response_store": str(tmp_path / "volume" / "responses.sqlite"),
                           "checkpoints_root": str(tmp_path / "volume" / "checkpoints")}
        data["orchestration"]["result_storage"] = f"{prefix}/prefect-results"
        config.write_text(yaml.safe_dump(data, sort_keys=False))
        started = datetime.now(timezone.utc)
        with pytest.raises(EndpointDown, match="retry.max_outage_s"):
            lion(config_path=str(config), run_id="remote")
        first = task_runs(since=started)
        results = s3.find(f"{prefix}/prefect-results")
        assert first["completed_keys"] and {Path(k).name for k in first["completed_keys"]} <= {Path(r).name for r in results}
        assert not (tmp_path / "runs").exists()  # nothing of the run went to a local folder

        # a fresh container: the local disk of the first attempt is gone, only the volume and S3 remain
        shutil.rmtree(container_disk, ignore_errors=True)
        api.plan = FaultPlan()
        resumed = datetime.now(timezone.utc)
        result = lion(config_path=str(config), run_id="remote")

    second = task_runs(since=resumed)
    # Every task with a cache key was read back from S3, not run again. Remote result storage makes
    # Prefect persist the rest too: the sub-flow (its tasks are the hits) and base-model, which resolves
    # a local path and so must run again in a new container.
    rerun = {first["functions"][k] for k in first["completed_keys"] - second["cached_keys"]}
    assert rerun <= {"base_model", "imitation"}, rerun
    assert {"answers_shard", "merge_parts", "training_set", "train"} <= {
        first["functions"][k] for k in first["completed_keys"] & second["cached_keys"]}
    assert not (first["completed_keys"] & second["completed_keys"])
    assert [s.iteration for s in result.iterations] == [0]
    store = RunStore(f"{prefix}/runs", "remote")
    assert store.iterations() == [0, 1] and {"train_pool", "cache_pool"} <= set(store.manifest(1).files)
    assert s3.exists(f"{prefix}/runs/remote/iter-0/plots/score_gap.png".removeprefix("s3://"))
