"""A run's identity: the config fields that decide what a run computes, and the hash of them.

Every field marked `OPERATION` (lion_core.config.base) says how or where a run is carried out, not what
it computes, and is left out; the rest is the identity. The hash keys every cached task and is written
into every committed file of a run, so changing what it covers changes every run's identity and breaks
the resume of runs made before.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any


def strip_operations(config: dict[str, Any], operations: Sequence[str]) -> dict[str, Any]:
    """A config's JSON form (`RunConfig.to_json_dict`) without the `operations` fields (dotted paths;
    lion_core.config.run.OPERATIONS are those of RunConfig)."""
    out = json.loads(json.dumps(config))
    for path in operations:
        *parents, leaf = path.split(".")
        node = out
        for name in parents:
            node = node.get(name) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
    training = out.get("training")
    if isinstance(training, dict) and training.get("method", "full") == "full":
        # A full fine-tune ignores the adapter settings, and runs made before `method` existed were full:
        # leaving both out keeps their hash, so their cached tasks and committed files still match.
        training.pop("method", None)
        training.pop("lora", None)
    if isinstance(training, dict) and training.get("max_steps") is None:
        training.pop("max_steps", None)  # added later; left out when unset, so older runs keep their hash
    loop = out.get("loop")
    if isinstance(loop, dict) and loop.get("selection", "adversarial") == "adversarial":
        loop.pop("selection", None)  # added later: the paper's loop keeps the hash it had before
    return out


def identity_hash(config: dict[str, Any], operations: Sequence[str]) -> str:
    """sha256 of the canonical JSON form of a config's identity (`RunConfig.config_hash`)."""
    canonical = json.dumps(strip_operations(config, operations), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def config_changes(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(dotted field, old value, new value) of every leaf field that differs between two JSON forms."""
    changes: list[tuple[str, Any, Any]] = []

    def walk(a: Any, b: Any, path: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b)):
                walk(a.get(key), b.get(key), f"{path}.{key}" if path else key)
        elif a != b:
            changes.append((path, a, b))

    walk(old, new, "")
    return changes
