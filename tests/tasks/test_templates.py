"""The deployment files users register: prefect.yaml and the work-pool base job templates."""

import asyncio
import json
import os
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
    assert docker["job_configuration"]["container_create_kwargs"]["device_requests"] == "{{ gpus }}"
    assert docker["variables"]["properties"]["gpus"]["default"][0]["Capabilities"] == [["gpu"]]
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
    assert set(d["parameters"]) == {"config_path", "run_id", "iterations", "export_dataset", "push_to_hub"}
    assert d["parameters"]["export_dataset"] is False and d["parameters"]["push_to_hub"] is None
    assert d["work_pool"]["name"] == "lion-gpu" and d["schedules"][0]["cron"]
    assert (REPO / d["parameters"]["config_path"]).is_file()


def test_lion_evaluate_deployment():
    data = yaml.safe_load((REPO / "prefect.yaml").read_text())
    (d,) = [d for d in data["deployments"] if d["name"] == "lion-evaluate"]
    assert d["entrypoint"] == "flows/evaluate.py:evaluate" and d["work_pool"]["name"] == "lion-gpu"
    assert set(d["parameters"]) == {"config_path", "checkpoints", "eval_set", "name"}


def test_lion_export_deployment_names_parameters_of_its_flow():
    import inspect

    from flows.export import export

    data = yaml.safe_load((REPO / "prefect.yaml").read_text())
    (d,) = [d for d in data["deployments"] if d["name"] == "lion-export"]
    assert d["entrypoint"] == "flows/export.py:export" and d["work_pool"]["name"] == "lion-gpu"
    assert set(d["parameters"]) <= set(inspect.signature(export.fn).parameters)
    assert {"config_path", "run_id", "push_to_hub"} <= set(d["parameters"])


# -- the Docker pool, rendered by prefect-docker's own job configuration ----------------------------------

def _docker_template() -> dict:
    return json.loads((REPO / "deployments" / "work-pools" / "docker.json").read_text())


def _deployment_job_variables(name: str, image_tag: str, monkeypatch) -> dict:
    """The job variables `prefect deploy` registers for a deployment of prefect.yaml: it fills `{{ $VAR }}` from
    its environment when deploying, as here."""
    from prefect.utilities.templating import apply_values

    monkeypatch.setenv("LION_IMAGE_TAG", image_tag)
    data = yaml.safe_load((REPO / "prefect.yaml").read_text())
    (d,) = [d for d in data["deployments"] if d["name"] == name]
    return apply_values(d["work_pool"]["job_variables"], os.environ, remove_notset=False)


def _render(template: dict, job_variables: dict):
    from prefect_docker.worker import DockerWorkerJobConfiguration

    return asyncio.run(DockerWorkerJobConfiguration.from_template_and_values(template, job_variables))


@pytest.mark.parametrize("name", ["process", "docker", "kubernetes"])
def test_prefect_accepts_each_template_as_a_pool(name):
    """The server's own check (it refused a `{{ $VAR }}` in the job configuration with a 422)."""
    from prefect.client.schemas.actions import WorkPoolCreate as ClientCreate
    from prefect.server.schemas.actions import WorkPoolCreate

    t = json.loads((REPO / "deployments" / "work-pools" / f"{name}.json").read_text())
    pool = WorkPoolCreate(name="lion-gpu", type=name, base_job_template=t)
    assert pool.base_job_template["variables"]["properties"]
    ClientCreate(name="lion-gpu", type=name, base_job_template=t)
    assert ":latest" not in json.dumps(t)


def test_docker_template_keys_are_the_docker_workers_fields():
    from prefect_docker.worker import DockerWorkerJobConfiguration

    assert set(_docker_template()["job_configuration"]) <= set(DockerWorkerJobConfiguration.model_fields)


def test_a_lion_distill_run_on_the_docker_pool_gets_the_deployed_codes_image_its_volumes_gpus_and_key(
        prefect_harness, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-the-worker")
    for name in ("lion-distill", "lion-evaluate"):
        jv = _deployment_job_variables(name, "0.1.0-g0123456789ab", monkeypatch)
        cfg = _render(_docker_template(), jv)
        assert cfg.image == "lion-distill:0.1.0-g0123456789ab"
        assert cfg.image_pull_policy == "Never"  # a locally built image: nothing to pull
        assert cfg.volumes == ["/srv/lion:/srv/lion", "lion-model-cache:/home/lion/.cache"]
        assert cfg.container_create_kwargs == {
            "device_requests": [{"Driver": "nvidia", "Count": -1, "Capabilities": [["gpu"]]}], "shm_size": "16g"}
        assert cfg.env["OPENAI_API_KEY"] == "sk-from-the-worker"
        assert cfg.env["PREFECT_RESULTS_PERSIST_BY_DEFAULT"] == "true"


def test_docker_pool_job_variables_set_gpus_volumes_and_image(prefect_harness):
    cfg = _render(_docker_template(), {
        "image": "lion-distill:0.1.0-gfeedface", "image_pull_policy": "IfNotPresent",
        "gpus": [{"Driver": "nvidia", "DeviceIDs": ["2", "3"], "Capabilities": [["gpu"]]}],
        "runs_volume": "/data/lion", "model_cache_volume": "/data/hf-cache", "shm_size": "32g",
        "env": {"CUDA_LAUNCH_BLOCKING": "1"}})
    assert cfg.image == "lion-distill:0.1.0-gfeedface" and cfg.image_pull_policy == "IfNotPresent"
    assert cfg.volumes == ["/data/lion:/srv/lion", "/data/hf-cache:/home/lion/.cache"]
    assert cfg.container_create_kwargs["device_requests"][0]["DeviceIDs"] == ["2", "3"]
    assert cfg.container_create_kwargs["shm_size"] == "32g"
    assert cfg.env["CUDA_LAUNCH_BLOCKING"] == "1" and "PREFECT_LOGGING_EXTRA_LOGGERS" in cfg.env
    # a machine without the NVIDIA runtime: no device request at all (one with Count 0 still fails)
    assert _render(_docker_template(), {"image": "x:1", "gpus": []}).container_create_kwargs["device_requests"] == []


def test_the_api_key_comes_from_a_secret_block_set_in_the_pool(prefect_harness, monkeypatch):
    from prefect.blocks.system import Secret

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    Secret(value="sk-from-the-block").save("lion-template-test-key", overwrite=True)
    t = _docker_template()
    t["variables"]["properties"]["env"]["default"]["OPENAI_API_KEY"] = "{{ prefect.blocks.secret.lion-template-test-key }}"
    cfg = _render(t, _deployment_job_variables("lion-distill", "0.1.0-gabc", monkeypatch))
    assert cfg.env["OPENAI_API_KEY"] == "sk-from-the-block"
    # neither source set: the variable is empty, not a leftover placeholder
    assert _render(_docker_template(), {"image": "x:1"}).env["OPENAI_API_KEY"] == ""


def test_the_image_runs_as_a_non_root_user_and_prebuilds_cpu_adam():
    text = (REPO / "deployments" / "Dockerfile").read_text()
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1] not in ("root", "0")
    assert re.search(r"^ARG BASE_IMAGE=", text, re.M) and re.search(r"^ARG TORCH_SPEC=", text, re.M)
    assert "DS_BUILD_CPU_ADAM=${DS_BUILD_CPU_ADAM}" in text and "--no-build-isolation" in text
    assert "installed_ops.get('cpu_adam')" in text  # the build fails if the op was not compiled in
