"""The project's shape that users and CI rely on."""

from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent


def test_top_level_layout():
    for name in ("flows", "tasks", "lion_core", "deployments", "prompts", "tests", "configs", "bench"):
        assert (REPO / name).is_dir(), name
    for name in ("pyproject.toml", "prefect.yaml", "Makefile", "README.md", ".ci/run"):
        assert (REPO / name).is_file(), name


def test_ci_runs_the_readme_test_command():
    readme = (REPO / "README.md").read_text()
    head = readme.split("\n## ", 1)[0]
    assert "make demo" in head and "make test" in head
    assert "make test" in (REPO / ".ci" / "run").read_text()


def test_prefect_project_file_parses():
    data = yaml.safe_load((REPO / "prefect.yaml").read_text())
    assert data["name"] == "lion-distill" and "deployments" in data


def test_lion_core_does_not_import_prefect():
    offenders = [
        str(p.relative_to(REPO)) for p in (REPO / "lion_core").rglob("*.py")
        if any(line.strip().startswith(("import prefect", "from prefect", "from flows", "from tasks", "import flows", "import tasks"))
               for line in p.read_text().splitlines())
    ]
    assert offenders == []


def test_deepspeed_configs_are_valid_json():
    import json
    stages = {}
    for p in sorted((REPO / "deployments" / "deepspeed").glob("*.json")):
        stages[p.name] = json.loads(p.read_text())["zero_optimization"]["stage"]
    assert stages == {"zero2.json": 2, "zero3.json": 3, "zero3_offload.json": 3}
    offload = json.loads((REPO / "deployments" / "deepspeed" / "zero3_offload.json").read_text())["zero_optimization"]
    assert offload["offload_optimizer"]["device"] == offload["offload_param"]["device"] == "cpu"
