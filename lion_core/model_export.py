"""`lion export-model`: a run's student as a folder that serves elsewhere.

The source is the run's published final checkpoint (or one iteration's). A full model is copied as it
is. A LoRA checkpoint is copied as the adapter, or with `merge` folded into its base and saved as a
plain transformers model (safetensors, the base's dtype, the tokenizer with the trained prompt
template, the model card) that `transformers` and vLLM load without `peft`. The folder is built aside
and renamed into place, so `out` is complete or absent.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from lion_core.checkpoints import CARD, FINAL_INFO, checkpoint_record, final_is_complete, trained_checkpoint
from lion_core.config import RunConfig, StudentConfig
from lion_core.errors import LionError
from lion_core.results import ModelExport
from lion_core.store import RunStore, resolve_uri
from lion_core.student.lora import ADAPTER_CONFIG, adapter_base, is_adapter, merged_model
from lion_core.student.models import CHECKPOINT_INFO
from lion_core.student.train import COMPLETE
from lion_core.version import code_version


def model_source(store: RunStore, config: RunConfig, iteration: int | None = None) -> Path:
    """The checkpoint to export: the run's final one, or the one iteration `iteration` ended with (trained,
    or carried from an earlier iteration); refused when it is not complete (a fine-tune still running or
    cut short)."""
    run_id = store.run_id
    if iteration is None:
        path = Path(config.storage.final_checkpoint_dir(run_id))
        if not final_is_complete(path):
            raise LionError(f"run {run_id!r} has no final checkpoint yet ({path}): finish the run "
                            "(lion run --resume), or export one iteration's with --iteration")
        return path
    record = checkpoint_record(store, iteration)
    source = record.source_iteration if record else iteration
    path = Path(resolve_uri(trained_checkpoint(config, run_id, source), config.storage.runs_root))
    if not (path / COMPLETE).is_file():
        raise LionError(f"run {run_id!r}: iteration {iteration} has no complete checkpoint at {path}")
    return path


def export_model(source: str | Path, out: str | Path, *, merge: bool = False,
                 student: StudentConfig | None = None) -> ModelExport:
    """Write the checkpoint at `source` to `out` (which must not exist, or be empty). An adapter exported
    as it is names `student.model` as its base when that is a Hugging Face id (not this machine's path)."""
    source, out = Path(source), Path(out).resolve()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise LionError(f"--out {out} already exists and is not empty; give a new folder")
    adapter = is_adapter(source)
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    info = json.loads((source / CHECKPOINT_INFO).read_text()) if (source / CHECKPOINT_INFO).is_file() else {}
    if adapter and merge:
        from transformers import AutoTokenizer

        merged_model(source).save_pretrained(staging)
        AutoTokenizer.from_pretrained(str(source)).save_pretrained(staging)  # with the trained prompt template
        for name in (CARD, FINAL_INFO):
            if (source / name).is_file():
                shutil.copy2(source / name, staging / name)
        if (staging / CARD).is_file():
            card = (staging / CARD).read_text(encoding="utf-8")
            card = re.sub(r"\n## Adapter\n.*?(?=\n## )", "", card, count=1, flags=re.S)  # nothing to load with peft
            (staging / CARD).write_text(card.replace("library_name: peft", "library_name: transformers", 1)
                                        + _merge_note(source), encoding="utf-8")
        kind = "merged"
    else:
        shutil.copytree(source, staging, ignore=shutil.ignore_patterns(COMPLETE, "training_args.bin"))
        kind = "adapter" if adapter else "full"
        if adapter and student is not None and student.keep_layers is None and _hub_id(student.model):
            settings = json.loads((staging / ADAPTER_CONFIG).read_text())
            (staging / ADAPTER_CONFIG).write_text(json.dumps({**settings, "base_model_name_or_path": student.model},
                                                             indent=2))
    exported = {**info, "exported": {"from": str(source), "kind": kind, "code_version": code_version(),
                                     "adapter_base": adapter_base(source) if adapter else None}}
    (staging / CHECKPOINT_INFO).write_text(json.dumps(exported, indent=2, default=str))
    if out.exists():
        out.rmdir()
    staging.rename(out)
    return ModelExport(source=str(source), out=str(out), kind=kind, adapter_base=exported["exported"]["adapter_base"],
                       files=sorted(p.name for p in out.iterdir()))


def _hub_id(model: str) -> bool:
    return re.fullmatch(r"[\w.-]+/[\w.-]+", model) is not None and not Path(model).exists()


def _merge_note(source: Path) -> str:
    return (f"\n## Merged\n\nThe adapter of `{source}` folded into its base `{adapter_base(source)}` "
            "(`lion export-model --merge`): a plain transformers model; `peft` is not needed to load it.\n")

