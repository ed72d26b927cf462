"""Depth pruning: a weaker student made from a model by keeping some of its decoder layers.

Minitron and Sheared-LLaMA prune a model before distilling into it; dropping whole decoder layers is
the simplest form ("depth pruning"). Kept layers are evenly spaced and always include the first and
the last, which carry the most (the embedding's read-in and the head's read-out). The result is an
ordinary `save_pretrained` folder, made once and cached, so every later step loads it like any model.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
from pathlib import Path

from lion_core.errors import LionError

PRUNING_INFO = "lion_pruning.json"


class PruningError(LionError):
    """The model cannot be pruned as asked."""


def kept_layers(n_layers: int, keep: int) -> list[int]:
    """`keep` indices out of range(n_layers), evenly spaced, first and last included."""
    if not 1 <= keep <= n_layers:
        raise PruningError(f"student.keep_layers: {keep} is not between 1 and the model's {n_layers} layers")
    if keep == 1:
        return [n_layers - 1]
    return sorted({round(i * (n_layers - 1) / (keep - 1)) for i in range(keep)})


def _source_identity(src: Path) -> str:
    """Name and size of the weight and config files: a changed source gives a new pruned folder."""
    parts = [f"{p.name}:{p.stat().st_size}" for p in sorted(src.iterdir())
             if p.is_file() and p.suffix in {".safetensors", ".bin", ".json"}]
    return hashlib.sha256("\n".join([str(src.resolve()), *parts]).encode()).hexdigest()[:12]


def pruned_model_dir(src: str | Path, keep: int, cache: Path) -> Path:
    """The cached folder of `src` (a local model folder) with `keep` of its decoder layers."""
    src = Path(src)
    if not (src / "config.json").is_file():
        raise PruningError(f"student.keep_layers needs a local model folder with a config.json; {src} has none")
    target = cache / "models" / f"{src.name}-keep{keep}-{_source_identity(src)}"
    if (target / ".complete").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / ".prune.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second process waits, then finds the finished folder
        if (target / ".complete").exists():
            return target
        tmp = target.parent / f".{target.name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        prune_depth(src, tmp, keep)
        (tmp / ".complete").write_text("ok\n")
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
    return target


def prune_depth(src: Path, out: Path, keep: int) -> list[int]:
    """Save `src` with only `keep` of its decoder layers into `out`; return the kept indices."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
    layers = getattr(getattr(model, "model", None), "layers", None)
    if not isinstance(layers, torch.nn.ModuleList):
        raise PruningError(f"{src}: {type(model).__name__} has no `model.layers`; depth pruning supports "
                           "decoder-only models laid out like Llama")
    n = len(layers)
    keep_idx = kept_layers(n, keep)
    model.model.layers = torch.nn.ModuleList(layers[i] for i in keep_idx)
    for new, layer in enumerate(model.model.layers):
        attn = getattr(layer, "self_attn", None)
        if attn is not None and hasattr(attn, "layer_idx"):
            attn.layer_idx = new  # the KV cache is indexed by it
    model.config.num_hidden_layers = len(keep_idx)
    if isinstance(getattr(model.config, "layer_types", None), list):
        model.config.layer_types = [model.config.layer_types[i] for i in keep_idx]
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(src).save_pretrained(out)
    (out / PRUNING_INFO).write_text(json.dumps(
        {"source": str(src), "source_layers": n, "kept_layers": keep_idx, "method": "depth pruning, evenly spaced"},
        indent=2))
    return keep_idx
