"""Reading a run config from YAML: duplicate keys refused, every invalid field named in one error, and
relative paths taken relative to the config file's folder (the fields marked `LOCAL_PATH`).

Defaults that are paths are relative to the working directory, except the DeepSpeed config's, which is
the project's own file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from lion_core.config.base import LOCAL_PATH, marked_paths
from lion_core.config.run import RunConfig
from lion_core.errors import ConfigError


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys instead of silently keeping the last one."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, yaml.Node] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first at line {seen[key].start_mark.line + 1})",
                key_node.start_mark,
            )
        seen[key] = key_node
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _format_validation_error(source: str, err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"]) or "<top level>"
        msg = e["msg"].removeprefix("Value error, ")
        got = ""
        # a pasted key or a URL with a password must not be echoed into logs
        secret_field = bool({"api_key_env", "password_env", "password_secret", "response_store"} & set(e["loc"]))
        if e["type"] not in ("missing", "extra_forbidden") and "input" in e and not secret_field:
            shown = repr(e["input"])
            got = f" (got {shown[:80]}{'...' if len(shown) > 80 else ''})"
        if e["type"] == "extra_forbidden":
            msg = "unknown field"
        lines.append(f"  - {where}: {msg}{got}")
    n = len(lines)
    return f"{source}: {n} invalid field{'s' if n != 1 else ''}:\n" + "\n".join(lines)


def parse_config(data: Any, source: str = "<config>") -> RunConfig:
    """Validate an already-parsed mapping; raises ConfigError listing every bad field."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections, got {type(data).__name__}")
    try:
        return RunConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(source, err)) from None


def load_config(path: str | Path) -> RunConfig:
    """Load and validate a YAML run config."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{p}: config file not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{p}: cannot read config: {err}") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err)
        raise ConfigError(f"{p}: invalid YAML{where}: {problem}") from None
    if isinstance(data, dict):
        data = _resolve_paths(data, p.resolve().parent)
    return parse_config(data, str(p))


PATH_FIELDS = tuple(marked_paths(RunConfig, LOCAL_PATH))
"""Config fields whose relative paths are taken relative to the config file's folder."""


def _resolve_paths(data: dict[str, Any], base: Path) -> dict[str, Any]:
    """Relative local paths written in a config file, made absolute against the file's folder, so a
    config means the same from any working directory (a worker's, a container's, `lion config check`'s)."""

    def resolve(value: Any) -> Any:
        if not isinstance(value, str) or not value or "://" in value or value.startswith(("hf:", "embedded:")):
            return value
        path = Path(value).expanduser()
        return value if path.is_absolute() else os.path.normpath(base / path)

    out = json.loads(json.dumps(data))
    for dotted in PATH_FIELDS:
        *parents, field = dotted.split(".")
        node = out
        for name in parents:
            node = node.get(name) if isinstance(node, dict) else None
        if isinstance(node, dict) and field in node:
            node[field] = resolve(node[field])
    student = out.get("student")
    if isinstance(student, dict) and isinstance(student.get("model"), str):
        model = student["model"]
        if model.startswith(("./", "../")) or (not Path(model).is_absolute() and (base / model).exists()):
            student["model"] = resolve(model)
    return out
