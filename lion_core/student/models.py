"""Where a student model comes from: the embedded SmolLM2, a local folder, or a Hugging Face model id."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lion_core.errors import LionError
from lion_core.llm.embedded import MODEL_NAME, embedded_model_dir

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


def checkpoint_info(path: str | Path) -> dict[str, Any] | None:
    """What a Lion checkpoint records about itself (prompt format, train data hash, config), if it is one."""
    p = Path(path) / CHECKPOINT_INFO
    return json.loads(p.read_text()) if p.is_file() else None
