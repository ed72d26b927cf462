"""LoRA and QLoRA students (`training.method`), through `peft`.

A LoRA checkpoint is a folder with the adapter (`adapter_config.json`, `adapter_model.safetensors`), the
tokenizer with its trained prompt template, `lion_checkpoint.json` and the model card. It names the
base model it adapts in `lion_checkpoint.json` (`adapter_base`), which is where loading it starts: the
student answers with the adapter applied in memory, and `merged_model` folds it into the base weights
for a folder that `transformers` and vLLM load without `peft`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lion_core.config import LoraSettings
from lion_core.errors import LionError
from lion_core.student.models import CHECKPOINT_INFO

ADAPTER_CONFIG = "adapter_config.json"


def is_adapter(path: str | Path) -> bool:
    """The folder holds a LoRA adapter rather than a full model."""
    return (Path(path) / ADAPTER_CONFIG).is_file()


def adapter_base(path: str | Path) -> str:
    """The base model an adapter checkpoint adapts: as its fine-tune recorded it, else as peft did. A
    recorded folder that is not on this machine (a run moved to another host, another model cache) is
    made again from the run's student settings (`embedded:`, `keep_layers`), as the run made it."""
    folder = Path(path)
    info = folder / CHECKPOINT_INFO
    recorded = json.loads(info.read_text()) if info.is_file() else {}
    if base := recorded.get("adapter_base"):
        student = (recorded.get("config") or {}).get("student")
        if Path(base).is_absolute() and not Path(base).exists() and student:
            from lion_core.config import StudentConfig
            from lion_core.student.models import student_base_model

            return student_base_model(StudentConfig.model_validate(student))
        return str(base)
    base = json.loads((folder / ADAPTER_CONFIG).read_text()).get("base_model_name_or_path")
    if not base:
        raise LionError(f"{folder}: a LoRA adapter that names no base model (no adapter_base in {CHECKPOINT_INFO}, "
                        f"no base_model_name_or_path in {ADAPTER_CONFIG})")
    return str(base)


def lora_config(settings: LoraSettings) -> Any:
    from peft import LoraConfig, TaskType

    return LoraConfig(task_type=TaskType.CAUSAL_LM, r=settings.rank, lora_alpha=settings.alpha,
                      lora_dropout=settings.dropout, target_modules=settings.target_modules,
                      modules_to_save=list(settings.modules_to_save) or None)


def with_adapter(model: Any, start_from: str | Path, settings: LoraSettings) -> Any:
    """`model` (the base) with a trainable adapter: the one at `start_from` when that is an adapter
    checkpoint (a later iteration goes on training it), else a new one made from `settings`."""
    from peft import PeftModel, get_peft_model

    if is_adapter(start_from):
        return PeftModel.from_pretrained(model, str(start_from), is_trainable=True)
    return get_peft_model(model, lora_config(settings))


def load_student(path: str | Path, dtype: Any = "auto") -> Any:
    """A student checkpoint ready to generate: a full model, or the base with the adapter applied in
    memory (not merged, so nothing is written)."""
    from transformers import AutoModelForCausalLM

    if not is_adapter(path):
        return AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype)
    from peft import PeftModel

    base = AutoModelForCausalLM.from_pretrained(adapter_base(path), dtype=dtype)
    return PeftModel.from_pretrained(base, str(path), is_trainable=False)


def merged_model(path: str | Path) -> Any:
    """An adapter checkpoint folded into its base: a plain transformers model in the base's saved dtype.
    The merge is done in float32, so the adapter's update is not rounded before it is added."""
    import torch
    from transformers import AutoConfig

    base = adapter_base(path)
    saved = getattr(AutoConfig.from_pretrained(base), "dtype", None) or torch.float32
    model = load_student(path, dtype=torch.float32).merge_and_unload()
    return model.to(getattr(torch, saved) if isinstance(saved, str) else saved)


def parameter_counts(model: Any) -> tuple[int, int]:
    """(trainable, all) parameters; a 4-bit weight counts as the parameters it stands for, a ZeRO-3
    partitioned one as its whole size (its local tensor is empty)."""
    trainable = total = 0
    for p in model.parameters():
        # a 4-bit tensor packs two values per byte of its storage dtype (peft counts them the same way)
        packed = 2 * p.element_size() if p.__class__.__name__ == "Params4bit" else 1
        n = getattr(p, "ds_numel", None) or p.numel() * packed
        total += n
        trainable += n if p.requires_grad else 0
    return trainable, total
