"""What every config field means: `lion config explain [FIELD]`.

Walks `RunConfig` and lists, for each leaf field, its dotted path, a readable type, its default as YAML
shows it, and its description (the docstring written after the field in its lion_core.config module). Pure: no
Prefect, nothing read but the models.
"""

from __future__ import annotations

import difflib
import math
import textwrap
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from lion_core.config.base import section_in
from lion_core.config.run import RunConfig
from lion_core.errors import ConfigError

REQUIRED = "required"
"""What `default` says for a field that has none."""


@dataclass(frozen=True)
class FieldHelp:
    path: str
    """Dotted path, e.g. `teacher.rate_limits.requests_per_minute`."""
    type: str
    """Readable type with its bounds, e.g. `int > 0`, `float in [0, 1]`, `"previous" | "base"`."""
    default: str
    """The default as YAML writes it, or `required`."""
    description: str
    """The field's docstring, on one line."""
    section: bool = False
    """A group of fields (a nested model) rather than a value."""


def field_help(model: type[BaseModel] = RunConfig) -> list[FieldHelp]:
    """Every leaf field of `model`, depth first in declaration order (a model's own fields come before
    its sub-sections', as `explain` prints them)."""
    return [h for h in _walk(model, _default_instance(model), "") if not h.section]


def section_help(model: type[BaseModel] = RunConfig) -> list[FieldHelp]:
    """Every section (a field holding a model, e.g. `teacher`, `teacher.rate_limits`, `evaluation.judge`)."""
    return [h for h in _walk(model, _default_instance(model), "") if h.section]


def explain(field: str | None = None) -> str:
    """The help text of every field (grouped by section), or of the section or leaf `field` names.
    An unknown field raises ConfigError with the closest names."""
    field = (field or "").strip().strip(".")
    entries = list(_walk(RunConfig, _default_instance(RunConfig), ""))
    if field:
        by_path = {h.path: h for h in entries}
        if field not in by_path:
            raise ConfigError(_unknown(field, list(by_path)))
        if not by_path[field].section:
            return _render_leaf(by_path[field])
        entries = [h for h in entries if h.path == field or h.path.startswith(field + ".")]
    sections = [h for h in entries if h.section]
    leaves = [h for h in entries if not h.section]
    blocks: list[str] = []
    if not field:
        blocks.append("Every field of a run config (YAML), by section: `path: type = default`, then what it means.\n"
                      "`lion config explain SECTION` or `lion config explain SECTION.FIELD` shows one part.")
        top = [h for h in leaves if "." not in h.path]
        if top:  # no field is at the top level today; were one added, it would still be listed
            blocks.append("\n\n".join(_render_leaf(h) for h in top))
    for s in sections:
        own = [h for h in leaves if h.path.rsplit(".", 1)[0] == s.path]
        blocks.append("\n\n".join([_render_section(s), *(_render_leaf(h) for h in own)]))
    return "\n\n\n".join(blocks)


# --- walking the models -------------------------------------------------------------------------------


def _walk(model: type[BaseModel], defaults: BaseModel | None, prefix: str) -> typing.Iterator[FieldHelp]:
    """Sections and leaves under `model`, each section followed by its own leaves, then its sub-sections.
    `defaults` is the model's default value where its parent gives one: `teacher.sampling.temperature`
    defaults to TeacherConfig's sampling (0.7), not Sampling's (1.0)."""
    subsections: list[tuple[str, FieldInfo, type[BaseModel], Any]] = []
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        default = _default_of(info, name, defaults)
        sub = section_in(info.annotation)
        if sub is not None:
            subsections.append((path, info, sub, default))
            continue
        yield FieldHelp(path, _type_text(info.annotation, info.metadata), _yaml_text(default),
                        _one_line(info.description))
    for path, info, sub, default in subsections:
        optional = _allows_none(info.annotation)
        yield FieldHelp(path, sub.__name__ + (" | None" if optional else ""),
                        _yaml_text(default) if default is None or default is PydanticUndefined else "",
                        _one_line(info.description), section=True)
        # A section that defaults to None (evaluation.judge) shows the defaults it has once written.
        inner = default if isinstance(default, BaseModel) else _default_instance(sub)
        yield from _walk(sub, inner, path + ".")


def _default_instance(model: type[BaseModel]) -> BaseModel | None:
    try:
        return model()
    except Exception:  # noqa: BLE001 - a model with required fields has no default instance
        return None


def _default_of(info: FieldInfo, name: str, parent_default: BaseModel | None) -> Any:
    if parent_default is not None:
        return getattr(parent_default, name)
    if info.is_required():
        return PydanticUndefined
    return info.get_default(call_default_factory=True)


def _allows_none(annotation: Any) -> bool:
    return _is_union(annotation) and type(None) in typing.get_args(annotation)


def _is_union(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (Union, types.UnionType)


# --- rendering types and values -----------------------------------------------------------------------


def _type_text(annotation: Any, metadata: list[Any] = ()) -> str:
    """`int > 0`, `float in [0, 1]`, `"a" | "b"`, `str | None`, `[float >= 0, float >= 0]`."""
    if typing.get_origin(annotation) is Annotated:
        base, *extra = typing.get_args(annotation)
        return _type_text(base, [*metadata, *extra])
    if _is_union(annotation):
        args = typing.get_args(annotation)
        # A bounded member is parenthesised, so `(int > 0) | None` does not read as `int > (0 | None)`.
        parts = [_type_text(a) for a in args if a is not type(None)]
        parts = [f"({p})" if " " in p and not p.startswith(("[", "list of")) else p for p in parts]
        if type(None) in args:
            parts.append("None")
        return " | ".join(parts)
    if typing.get_origin(annotation) is Literal:
        return " | ".join(f'"{v}"' if isinstance(v, str) else _yaml_text(v) for v in typing.get_args(annotation))
    if typing.get_origin(annotation) is tuple:
        args = typing.get_args(annotation)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"list of {_type_text(args[0])}"
        return "[" + ", ".join(_type_text(a) for a in args) + "]"
    if typing.get_origin(annotation) in (list, set, frozenset):
        (arg,) = typing.get_args(annotation) or (Any,)
        return f"list of {_type_text(arg)}"
    if typing.get_origin(annotation) is dict:
        return "mapping"
    name = getattr(annotation, "__name__", None) or str(annotation).removeprefix("typing.")
    bounds = _bounds(metadata)
    return f"{name} {bounds}" if bounds else name


def _bounds(metadata: list[Any]) -> str:
    found: dict[str, Any] = {}
    for item in metadata:
        if isinstance(item, FieldInfo):
            found.update(_bound_values(item.metadata))
        else:
            found.update(_bound_values([item]))
    lo, lo_open = (found["gt"], True) if "gt" in found else (found.get("ge"), False)
    hi, hi_open = (found["lt"], True) if "lt" in found else (found.get("le"), False)
    if lo is not None and hi is not None:
        return f"in {'(' if lo_open else '['}{_num(lo)}, {_num(hi)}{')' if hi_open else ']'}"
    if lo is not None:
        return f"{'>' if lo_open else '>='} {_num(lo)}"
    if hi is not None:
        return f"{'<' if hi_open else '<='} {_num(hi)}"
    return ""


def _bound_values(items: list[Any]) -> dict[str, Any]:
    out = {}
    for item in items:
        for key in ("gt", "ge", "lt", "le"):  # annotated_types.Gt/Ge/Lt/Le/Interval all carry these names
            value = getattr(item, key, None)
            if value is not None:
                out[key] = value
    return out


def _num(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _yaml_text(value: Any) -> str:
    """A value as it would be written in the YAML config: `null`, `true`, `2.0e-05`, `[1.0, 1.0]`."""
    if value is PydanticUndefined:
        return REQUIRED
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    elif isinstance(value, tuple):
        value = list(value)
    if isinstance(value, float) and not math.isfinite(value):
        return {math.inf: ".inf", -math.inf: "-.inf"}.get(value, ".nan")
    text = yaml.safe_dump(value, default_flow_style=True, width=math.inf, sort_keys=False).strip()
    return text.removesuffix("...").strip()


def _one_line(description: str | None) -> str:
    return " ".join((description or "").split())


# --- rendering help text ------------------------------------------------------------------------------

_WIDTH = 100
_INDENT = "    "


def _render_section(h: FieldHelp) -> str:
    head = f"[{h.path}]"
    if h.type.endswith(" | None"):
        head += f"  (optional, default: {h.default or 'null'})"
    return "\n".join([head, *textwrap.wrap(h.description, _WIDTH, initial_indent="  ", subsequent_indent="  ")])


def _render_leaf(h: FieldHelp) -> str:
    head = f"{h.path}: {h.type}" + ("  (required)" if h.default == REQUIRED else f" = {h.default}")
    body = textwrap.wrap(h.description, _WIDTH, initial_indent=_INDENT, subsequent_indent=_INDENT)
    return "\n".join([head, *body])


def _unknown(field: str, known: list[str]) -> str:
    leaf = field.rsplit(".", 1)[-1]
    leaves = {p.rsplit(".", 1)[-1]: None for p in known}
    close_leaves = set(difflib.get_close_matches(leaf, leaves, n=3, cutoff=0.75))
    # Matches of the whole path first, then same-named (or nearly) fields in other sections.
    suggestions = difflib.get_close_matches(field, known, n=5, cutoff=0.6)
    suggestions += [p for p in known if p.rsplit(".", 1)[-1] in close_leaves and p not in suggestions]
    shown = suggestions[:6]
    hint = f"; did you mean {', '.join(shown)}?" if shown else ""
    return f"unknown config field {field!r}{hint} (`lion config explain` lists every field)"
