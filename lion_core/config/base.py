"""What every config section shares: the frozen base model, bounded number types, and the markers a field
carries when it is an operation setting or a path.

A marker sits on the field it describes (`Annotated[str | None, OPERATION, LOCAL_PATH]`), so a field
added, renamed or moved takes its meaning with it; `OPERATIONS` and `PATH_FIELDS` are derived from the
markers (`marked_paths`), never written out by hand.
"""

from __future__ import annotations

import typing
from collections.abc import Iterator
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

PositiveInt = Annotated[int, Field(gt=0)]
NonNegFloat = Annotated[float, Field(ge=0)]


class Section(BaseModel):
    # The string after a field becomes its description (`lion config explain`, lion_core.config.explain).
    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)


class Marker:
    """A label in a field's `Annotated[...]` metadata. Pydantic keeps metadata it does not know in
    `FieldInfo.metadata` and otherwise ignores it: validation, dumps and the JSON schema are unchanged."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


OPERATION = Marker("OPERATION")
"""How or where a run is carried out, not what it computes: a resume may change the field, and it is left
out of the run's identity (`identity_of`, `config_hash`). On a field that holds a section, the whole
section is an operation."""

LOCAL_PATH = Marker("LOCAL_PATH")
"""A relative path written in a config file is taken relative to the file's folder (`load_config`)."""


def marked_paths(model: type[BaseModel], marker: Marker, prefix: str = "") -> Iterator[str]:
    """Dotted paths of the fields of `model` that carry `marker`, depth first in declaration order. A
    marked field is not looked into; an unmarked one that holds a section (`X` or `X | None`) is."""
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        if any(item is marker for item in info.metadata):
            yield path
        elif (sub := section_in(info.annotation)) is not None:
            yield from marked_paths(sub, marker, path + ".")


def section_in(annotation: Any) -> type[BaseModel] | None:
    """The model a field holds (`X` or `X | None`), or None for a value field."""
    for arg in (annotation, *typing.get_args(annotation)):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None
