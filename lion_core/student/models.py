"""Where a student model comes from: the embedded SmolLM2, a local folder, or a Hugging Face model id."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lion_core.config import StudentConfig
from lion_core.errors import LionError
from lion_core.llm.embedded import MODEL_NAME, cache_root, embedded_model_dir

EMBEDDED_PREFIX = "embedded:"
CHECKPOINT_INFO = "lion_checkpoint.json"


def resolve_model(spec: str) -> str:
    """A path or id that `from_pretrained` takes. `embedded:<name>` is converted once and cached."""
    if spec.startswith(EMBEDDED_PREFIX):
        name = spec[len(EMBEDDED_PREFIX):]
        if name != MODEL_NAME:
            raise LionError(f"student.model: unknown embedded model {name!r}; the embedded one is {MODEL_NAME!r}")
        return str(embedded_model_dir())
    return spec


def student_base_model(student: StudentConfig) -> str:
    """The run's base model: `student.model`, depth-pruned to `student.keep_layers` when that is set."""
    path = resolve_model(student.model)
    if student.keep_layers is None:
        return path
    from lion_core.student.pruning import pruned_model_dir

    return str(pruned_model_dir(path, student.keep_layers, cache_root()))


def checkpoint_info(path: str | Path) -> dict[str, Any] | None:
    """What a Lion checkpoint records about itself (prompt format, train data hash, config), if it is one."""
    p = Path(path) / CHECKPOINT_INFO
    return json.loads(p.read_text()) if p.is_file() else None
