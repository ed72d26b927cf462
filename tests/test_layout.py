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
        if any(line.strip().startswith(("import prefect", "from prefect", "from flows", "from tasks", "import flows",
                                        "import tasks"))
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


def _python_files():
    for folder in ("lion_core", "flows", "tasks", "tests", "bench"):
        yield from sorted((REPO / folder).rglob("*.py"))


def _private_names_used_across_modules(path: Path) -> list[str]:
    """`from m import _x`, and `m._x` where `m` is a module this file imported."""
    import ast

    tree = ast.parse(path.read_text(), filename=str(path))
    modules: set[str] = set()
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module != "__future__":
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    found.append(f"line {node.lineno}: from {node.module} import {alias.name}")
                # `from lion_core import stages`: `stages` is a module too
                modules.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                modules.add(alias.asname or alias.name.split(".")[0])
    ours = {m for m in modules if (REPO / m).is_dir() or (REPO / "lion_core" / f"{m}.py").is_file()
            or any((REPO / d).joinpath(f"{m}.py").is_file() for d in ("flows", "tasks", "lion_core/llm", "lion_core/student"))}
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                and isinstance(node.value, ast.Name) and node.value.id in ours):
            found.append(f"line {node.lineno}: {node.value.id}.{node.attr}")
        if (isinstance(node, ast.Call) and getattr(node.func, "attr", "") in ("setattr", "getattr")
                and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant)
                and str(node.args[1].value).startswith("_") and isinstance(node.args[0], ast.Name)
                and node.args[0].id in ours):
            found.append(f"line {node.lineno}: {node.func.attr}({node.args[0].id}, {node.args[1].value!r})")
    return found


def test_no_module_uses_another_modules_private_names():
    offenders = {str(p.relative_to(REPO)): found for p in _python_files() if (found := _private_names_used_across_modules(p))}
    assert offenders == {}


def test_flows_pass_typed_results_not_untyped_dicts():
    counts = {p.name: p.read_text().count("dict[str, Any]") for p in sorted((REPO / "flows").glob("*.py"))}
    assert sum(counts.values()) <= 1, counts
