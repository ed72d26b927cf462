"""The project's shape that users and CI rely on."""

import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent


def test_top_level_layout():
    for name in ("flows", "tasks", "lion_core", "lion_prefect", "lion_cli", "deployments", "prompts", "tests", "configs",
                 "bench"):
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


def _imported_packages(path: Path) -> set[str]:
    """The top-level packages a file imports, at module level or inside a function."""
    import ast

    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def _importers(package: str, forbidden: set[str]) -> dict[str, list[str]]:
    return {str(p.relative_to(REPO)): sorted(bad) for p in sorted((REPO / package).rglob("*.py"))
            if (bad := _imported_packages(p) & forbidden)}


def test_lion_core_does_not_import_prefect():
    assert _importers("lion_core", {"prefect", "flows", "tasks", "lion_prefect", "lion_cli"}) == {}


def test_lion_prefect_is_plumbing_below_flows_tasks_and_the_command_line():
    assert _importers("lion_prefect", {"flows", "tasks", "lion_cli"}) == {}


def test_tasks_import_no_flow_and_not_the_command_line():
    assert _importers("tasks", {"flows", "lion_cli"}) == {}


def test_flows_do_not_import_the_command_line():
    assert _importers("flows", {"lion_cli"}) == {}


def _module_imports(packages: tuple[str, ...]) -> dict[str, set[str]]:
    """Each module of `packages` (dotted name) and the modules of `packages` it imports, anywhere in it."""
    import ast

    files = {}
    for package in packages:
        for p in (REPO / package).rglob("*.py"):
            parts = p.relative_to(REPO).with_suffix("").parts
            files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    graph = {}
    for name, p in files.items():
        deps = set()
        for node in ast.walk(ast.parse(p.read_text(), filename=str(p))):
            if isinstance(node, ast.Import):
                deps |= {alias.name for alias in node.names if alias.name in files}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                # `from lion_prefect import leases` imports the module leases; `from m import f`, the module m
                deps |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in files else node.module
                         for a in node.names} & files.keys()
        graph[name] = deps - {name}
    return graph


PACKAGES = ("lion_core", "flows", "tasks", "lion_prefect", "lion_cli")


def test_no_import_circle_among_the_projects_modules():
    graph = _module_imports(PACKAGES)
    circles, done = [], set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            circles.append(path[path.index(module):] + [module])
            return
        if module in done:
            return
        for dep in sorted(graph[module]):
            visit(dep, path + [module])
        done.add(module)

    for module in sorted(graph):
        visit(module, [])
    assert circles == []


def test_process_supervision_knows_no_command():
    assert _imported_packages(REPO / "lion_cli" / "supervision.py") & {"lion_cli", "typer", "click", "flows", "tasks"} == set()


def test_the_package_list_the_script_and_the_image_agree():
    import re

    project = (REPO / "pyproject.toml").read_text()  # tomllib is not in Python 3.10
    packages = re.findall(r'"(\w+)\*"', re.search(r"^include = \[(.*)\]$", project, re.M).group(1))
    assert set(packages) == {"lion_core", "lion_prefect", "lion_cli", "flows", "tasks"}
    assert re.search(r'^lion = "lion_cli\.main:main"$', project, re.M)
    dockerfile = (REPO / "deployments" / "Dockerfile").read_text()
    assert [p for p in packages if f"COPY {p} {p}" not in dockerfile] == []


def test_deepspeed_configs_are_valid_json():
    import json
    stages = {}
    for p in sorted((REPO / "deployments" / "deepspeed").glob("*.json")):
        stages[p.name] = json.loads(p.read_text())["zero_optimization"]["stage"]
    assert stages == {"zero2.json": 2, "zero3.json": 3, "zero3_offload.json": 3}
    offload = json.loads((REPO / "deployments" / "deepspeed" / "zero3_offload.json").read_text())["zero_optimization"]
    assert offload["offload_optimizer"]["device"] == offload["offload_param"]["device"] == "cpu"


def _python_files():
    for folder in ("lion_core", "lion_prefect", "lion_cli", "flows", "tasks", "tests", "bench"):
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
            or any((REPO / d).joinpath(f"{m}.py").is_file() for d in ("flows", "tasks", "lion_prefect", "lion_cli",
                                                                     "lion_core/llm", "lion_core/student"))}
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


def test_no_module_of_the_project_is_over_400_lines():
    long = {str(p.relative_to(REPO)): n for package in PACKAGES for p in (REPO / package).rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 400}
    assert long == {}


def test_each_stage_of_figure_2_is_a_package_of_lion_core():
    for stage in ("imitation", "discrimination", "generation"):
        assert (REPO / "lion_core" / stage / "__init__.py").is_file(), stage
    assert not (REPO / "lion_core" / "stages.py").exists()


def test_nothing_points_to_a_document_outside_the_repository():
    """A user who clones the repository cannot follow a pointer to the files beside the checkout it was
    written in; what the code needs of them is in docs/."""
    import subprocess

    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    outside = re.compile(r"LION\.md|MACHINE-NOTES|ARCHITECTURE\.md|\.\./shared/[A-Za-z-]+\.md")
    hits = [f"{name}:{i}" for name in tracked if name.endswith((".py", ".md", ".yaml", ".yml", ".toml", "Makefile"))
            and name != "tests/test_layout.py"
            for i, line in enumerate((REPO / name).read_text(errors="replace").splitlines(), start=1) if outside.search(line)]
    assert hits == []
