"""The deployment files users register: prefect.yaml and the work-pool base job templates."""

import json
import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
_VAR = re.compile(r"\{\{\s*([a-z_]+)\s*\}\}")


def _placeholders(node):
    if isinstance(node, str):
        yield from _VAR.findall(node)
    elif isinstance(node, dict):
        for v in node.values():
            yield from _placeholders(v)
    elif isinstance(node, list):
        for v in node:
            yield from _placeholders(v)


@pytest.mark.parametrize("name", ["process", "docker", "kubernetes"])
def test_every_placeholder_of_a_template_is_a_declared_variable(name):
    t = json.loads((REPO / "deployments" / "work-pools" / f"{name}.json").read_text())
    used = set(_placeholders(t["job_configuration"]))
    assert used and used <= set(t["variables"]["properties"])


def test_templates_ask_for_gpus():
    proc = json.loads((REPO / "deployments" / "work-pools" / "process.json").read_text())
    assert "CUDA_VISIBLE_DEVICES" in proc["variables"]["properties"]["env"]["default"]
    docker = json.loads((REPO / "deployments" / "work-pools" / "docker.json").read_text())
    assert docker["job_configuration"]["container_create_kwargs"]["device_requests"][0]["Capabilities"] == [["gpu"]]
    k8s = json.loads((REPO / "deployments" / "work-pools" / "kubernetes.json").read_text())
    container = k8s["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "{{ gpu_count }}"
    for t in (docker, k8s):
        env = t["variables"]["properties"]["env"]
        assert env["default"]["PREFECT_RESULTS_PERSIST_BY_DEFAULT"] == "true"
        # a retried run in a new container needs durable task results: the run config names where
        # (orchestration.result_storage); a default block that may not exist would fail every run
        assert "orchestration.result_storage" in env["description"]
        assert not any("STORAGE_BLOCK" in k for k in env["default"])


def test_lion_distill_deployment():
    data = yaml.safe_load((REPO / "prefect.yaml").read_text())
    (d,) = [d for d in data["deployments"] if d["name"] == "lion-distill"]
    assert d["entrypoint"] == "flows/lion.py:lion" and d["concurrency_limit"] == 1
    assert set(d["parameters"]) == {"config_path", "run_id", "iterations"}
    assert d["work_pool"]["name"] == "lion-gpu" and d["schedules"][0]["cron"]
    assert (REPO / d["parameters"]["config_path"]).is_file()


def test_lion_evaluate_deployment():
    data = yaml.safe_load((REPO / "prefect.yaml").read_text())
    (d,) = [d for d in data["deployments"] if d["name"] == "lion-evaluate"]
    assert d["entrypoint"] == "flows/evaluate.py:evaluate" and d["work_pool"]["name"] == "lion-gpu"
    assert set(d["parameters"]) == {"config_path", "checkpoints", "eval_set", "name"}
