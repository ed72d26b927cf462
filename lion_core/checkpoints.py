"""Which student checkpoint each iteration ends with, the run's final checkpoint, and model cards.

Every iteration commits a one-row `checkpoint` record: the checkpoint it trained, or, when its Train
Pool was empty (the last generation accepted nothing), the checkpoint it carried forward from an
earlier iteration, with the reason. The next iteration starts from that record, never from a folder
name it assumes. After the last iteration, the final Train Pool is answered and trained on like any
other; the resulting checkpoint is published as `<checkpoints>/final`, the run's deliverable.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa

from lion_core.config import RunConfig
from lion_core.errors import StoreError
from lion_core.results import CheckpointRecord
from lion_core.store import PoolRef, RunStore, resolve_uri, run_relative
from lion_core.student.models import CHECKPOINT_INFO
from lion_core.student.train import COMPLETE, FINAL
from lion_core.version import code_version

CHECKPOINT_SCHEMA_VERSION = "checkpoint/1"
CHECKPOINT_SCHEMA = pa.schema([
    ("status", pa.string()), ("source_iteration", pa.int32()), ("reason", pa.string()), ("train_rows", pa.int64()),
    ("path", pa.string()),
])
CARD = "README.md"
FINAL_INFO = "lion_final.json"
EVALUATIONS = "lion_evaluations.json"
EMPTY_TRAIN_POOL = "the Train Pool is empty: the previous generation accepted no instruction"


def record_checkpoint(store: RunStore, k: int, config: RunConfig, *, trained: bool, train_rows: int) -> CheckpointRecord:
    """Commit iteration k's checkpoint record (one row) to its manifest and return it. A trained record
    names iteration k; a carried one names the iteration whose checkpoint it carries, with the reason.
    Paths are derived from the config when read, so a run whose checkpoints moved still resumes."""
    source = k if trained else carried_from(store, k)
    if source is None:
        raise StoreError(f"iteration {k} has nothing to train on and no earlier checkpoint to carry forward")
    record = CheckpointRecord(status="trained" if trained else "carried", source_iteration=source,
                              reason=None if trained else EMPTY_TRAIN_POOL, train_rows=train_rows,
                              path=trained_checkpoint(config, store.run_id, source))
    ref = store.write_table(k, "checkpoint", pa.Table.from_pylist([record.model_dump()], schema=CHECKPOINT_SCHEMA),
                            schema_version=CHECKPOINT_SCHEMA_VERSION)
    store.commit(k, {"checkpoint": ref})
    return record


def trained_checkpoint(config: RunConfig, run_id: str, k: int) -> str:
    """The model folder iteration k's fine-tune leaves (a `run://` reference when it is inside the run)."""
    return run_relative(str(Path(config.storage.checkpoint_dir(run_id, k)) / FINAL), config.storage.runs_root, run_id)


def checkpoint_record(store: RunStore, k: int) -> CheckpointRecord | None:
    """Iteration k's checkpoint record, or None when iteration k has not finished its imitation."""
    manifest = store.manifest(k)
    entry = manifest.files.get("checkpoint") if manifest else None
    return CheckpointRecord(**store.read_table(store.ref_from_entry(entry)).to_pylist()[0]) if entry else None


def previous_checkpoint(store: RunStore, config: RunConfig, k: int) -> str | None:
    """What iteration k's fine-tune continues from: the checkpoint iteration k-1 ended with (trained or
    carried). Runs made before records existed fall back to the folder iteration k-1 trained into."""
    if k == 0:
        return None
    record = checkpoint_record(store, k - 1)
    return trained_checkpoint(config, store.run_id, record.source_iteration if record else k - 1)


def carried_from(store: RunStore, k: int) -> int | None:
    """The iteration whose trained checkpoint iteration k carries forward when it has nothing to train
    on (None: nothing was trained before it)."""
    record = checkpoint_record(store, k - 1) if k > 0 else None
    return record.source_iteration if record else None


def publish_final(source: str | Path, final_dir: str | Path, *, info: Mapping[str, Any],
                  runs_root: str | None = None) -> Path:
    """Make `final_dir` the run's deliverable: a copy of `source` (hard links where the file system
    allows, so a 14 GB model costs no space: never write into either folder in place), plus
    `lion_final.json`. Built aside and renamed into place, so `final_dir` is either complete or absent.
    A complete one made from the same iteration and source is left as it is; one from an earlier
    length of the run (the run was extended) is replaced. A `run://` source resolves under `runs_root`."""
    final_dir = Path(final_dir)
    known = read_final_info(final_dir)
    if known and (known.get("iteration"), known.get("source_iteration")) == (info.get("iteration"),
                                                                           info.get("source_iteration")):
        return final_dir
    staging = final_dir.with_name(final_dir.name + ".partial")
    retired = final_dir.with_name(final_dir.name + ".old")
    for leftover in (staging, retired):
        shutil.rmtree(leftover, ignore_errors=True)

    def link_or_copy(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(resolve_uri(str(source), runs_root), staging, copy_function=link_or_copy,
                    ignore=shutil.ignore_patterns(COMPLETE, CARD, FINAL_INFO, EVALUATIONS))
    (staging / FINAL_INFO).write_text(json.dumps({**info, "source": str(source), "code_version": code_version()},
                                                 indent=2, default=str))
    if final_dir.exists():
        final_dir.rename(retired)
    staging.rename(final_dir)
    shutil.rmtree(retired, ignore_errors=True)
    return final_dir


def is_current_final(final_dir: str | Path, iteration: int) -> bool:
    """The published final checkpoint is complete and was made after iteration `iteration`."""
    info = read_final_info(final_dir)
    return bool(info) and info.get("iteration") == iteration


def final_card_note(record: CheckpointRecord, n: int) -> str:
    """The model card's sentence on what the final checkpoint is."""
    if record.status == "trained":
        return (f"The final checkpoint of the run: trained after the last iteration on the final Train Pool "
                f"(iteration {n}, {record.train_rows} teacher answers).")
    return f"The final checkpoint of the run, carried from iteration {record.source_iteration}: {record.reason}."


def final_is_complete(final_dir: str | Path) -> bool:
    """A published final checkpoint (its marker is written last)."""
    return (Path(final_dir) / COMPLETE).is_file()


def read_final_info(final_dir: str | Path) -> dict[str, Any] | None:
    """What `lion_final.json` says of a published final checkpoint (None until it is complete)."""
    path = Path(final_dir) / FINAL_INFO
    return json.loads(path.read_text()) if final_is_complete(final_dir) and path.is_file() else None


def final_text(final_dir: str | Path, info: Mapping[str, Any] | None) -> str:
    """One line for the end of `lion run`: where the deliverable is and what it was trained on."""
    if info is None:
        return f"final checkpoint: not published yet ({final_dir})"
    if info.get("selection") == "one_shot":
        return f"final checkpoint: {final_dir} (one-shot: trained once on {info['train_rows']} teacher answers)"
    if info.get("status") == "trained":
        return (f"final checkpoint: {final_dir} (trained on the final Train Pool of iteration {info['iteration']}: "
                f"{info['train_rows']} teacher answers)")
    return (f"final checkpoint: {final_dir} (carried from iteration {info.get('source_iteration')}: "
            f"{info.get('reason')})")


def mark_complete(folder: str | Path) -> None:
    (Path(folder) / COMPLETE).write_text("ok\n")


def lineage(store: RunStore, upto: int) -> list[dict[str, Any]]:
    """Per iteration up to `upto`: pool sizes by origin and what the fine-tune trained on."""
    out = []
    for k in range(upto + 1):
        manifest = store.manifest(k)
        if manifest is None:
            break
        files = manifest.files
        item: dict[str, Any] = {"iteration": k}
        for name in ("train_pool", "cache_pool", "teacher_answers_train"):
            if name in files:
                item[name] = files[name].rows
        record = checkpoint_record(store, k)
        if record is not None:
            item["checkpoint"] = record.status + (f" (from iteration {record.source_iteration})"
                                                  if record.status == "carried" else "")
        out.append(item)
    return out


def model_card(*, title: str, config: RunConfig, base_model: str, start_from: str, run_id: str,
               trained_on: PoolRef | None, lineage_rows: list[dict[str, Any]], scores: Mapping[str, Any] | None = None,
               note: str | None = None) -> str:
    """The checkpoint's README.md: the YAML header the Hugging Face Hub reads, then what it is, what it
    was trained on (sizes per iteration), how, with which config, and its evaluation when known."""
    t = config.training
    hub_id = re.fullmatch(r"[\w.-]+/[\w.-]+", base_model) and not Path(base_model).exists()
    adapter = t.method != "full"
    lines = [
        "---",
        *([f"base_model: {base_model}"] if hub_id else []),
        f"library_name: {'peft' if adapter else 'transformers'}",
        "pipeline_tag: text-generation",
        "tags: [lion, distillation]",
        "---",
        f"# {title}",
        "",
        f"A student of Lion adversarial distillation (run `{run_id}`), fine-tuned from "
        f"`{resolve_uri(start_from, config.storage.runs_root)}` "
        f"(base model `{base_model}`) on answers of the teacher `{config.teacher.model}` "
        f"at `{config.teacher.base_url}`.",
    ]
    if note:
        lines += ["", note]
    if adapter:
        lr = t.lora
        targets = lr.target_modules if isinstance(lr.target_modules, str) else ", ".join(lr.target_modules)
        lines += [
            "",
            "## Adapter",
            "",
            f"A {t.method.upper()} adapter (rank {lr.rank}, alpha {lr.alpha:g}, dropout {lr.dropout:g}, on {targets}"
            + (f"; {', '.join(lr.modules_to_save)} trained in full" if lr.modules_to_save else "")
            + f") of the base model `{base_model}`: load it with `peft.AutoPeftModelForCausalLM.from_pretrained`, "
            "or write a merged model that `transformers` and vLLM load as it is with "
            f"`lion export-model {run_id} --merge --out DIR`.",
        ]
    lines += [
        "",
        "## Prompt format",
        "",
        f"`{config.student.prompt_format}`: the tokenizer's chat template renders exactly the prompt this model "
        "was trained on, so `tokenizer.apply_chat_template(messages, add_generation_prompt=True)` (a user "
        "message with `content` = the instruction and an optional `input` key) serves it as trained.",
        "",
        "## Data lineage",
        "",
        "| iteration | Train Pool | Cache Pool | teacher answers trained on | checkpoint |",
        "|---|---|---|---|---|",
    ]
    for r in lineage_rows:
        lines.append(f"| {r['iteration']} | {r.get('train_pool', '-')} | {r.get('cache_pool', '-')} | "
                     f"{r.get('teacher_answers_train', '-')} | {r.get('checkpoint', '-')} |")
    if trained_on is not None:
        where = resolve_uri(trained_on.uri, config.storage.runs_root)
        lines += ["", f"Trained on `{where}` ({trained_on.rows} rows, sha256 `{trained_on.sha256}`)."]
    lines += [
        "",
        "## Training",
        "",
        f"- learning rate {t.learning_rate:g}, {t.num_train_epochs:g} epochs, {t.lr_scheduler_type} schedule, "
        f"warmup ratio {t.warmup_ratio:g}, weight decay {t.weight_decay:g}",
        f"- effective batch {t.effective_batch_size} (per device {t.per_device_batch_size}), max length {t.max_length}, "
        f"bf16 {t.bf16}",
        f"- launcher `{t.launcher}` on {t.world_size} process(es), DeepSpeed config `{t.deepspeed_config}`, "
        f"starting from `{t.init_from}`, method `{t.method}`",
        "",
        "## Provenance",
        "",
        f"- config hash `{config.config_hash()}`",
        f"- code version `{code_version()}`",
        "",
        "## Evaluation",
        "",
    ]
    lines.append("Not evaluated yet: `lion evaluate --checkpoints <this folder>` adds its scores here.")
    card = "\n".join(lines) + "\n"
    return with_scores(card, scores) if scores else card


def with_scores(card: str, scores: Mapping[str, Mapping[str, Any]]) -> str:
    """The card with its Evaluation section replaced by a table of `scores` (evaluation name -> scores)."""
    head = card.split("\n## Evaluation\n", 1)[0]
    lines = ["", "## Evaluation", "", "| evaluation | relative score | wins / ties / losses |", "|---|---|---|"]
    for name, s in scores.items():
        rel = s.get("relative_score")
        lines.append(f"| {name} | {'-' if rel is None else f'{rel:.1%}'} | "
                     f"{s.get('wins', '-')} / {s.get('ties', '-')} / {s.get('losses', '-')} |")
    return head + "\n".join(lines) + "\n"


def write_card(folder: str | Path, text: str) -> None:
    _write_atomic(Path(folder) / CARD, text)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_checkpoint_card(store: RunStore, config: RunConfig, k: int, checkpoint: str | Path, *, base_model: str,
                          start_from: str, trained_on: PoolRef | None, title: str, note: str | None = None) -> None:
    """Write the model card of a checkpoint trained (or published) at iteration k of a run."""
    write_card(checkpoint, model_card(title=title, config=config, base_model=base_model, start_from=start_from,
                                      run_id=store.run_id, trained_on=trained_on, lineage_rows=lineage(store, k),
                                      note=note))


def add_scores_to_card(checkpoint: str | Path, name: str, scores: Mapping[str, Any]) -> bool:
    """Record an evaluation's scores in a checkpoint's card (kept in `lion_evaluations.json` beside it);
    False when the folder has no Lion model card (a base model, or a read-only folder)."""
    folder = Path(checkpoint)
    card = folder / CARD
    if not (folder / CHECKPOINT_INFO).is_file() or not card.is_file() or not os.access(folder, os.W_OK):
        return False  # not a Lion checkpoint (a base model, a hub snapshot): leave its files alone
    record = folder / EVALUATIONS
    known = json.loads(record.read_text()) if record.is_file() else {}
    known[name] = {k: scores.get(k) for k in ("relative_score", "wins", "ties", "losses", "questions")}
    _write_atomic(record, json.dumps(known, indent=2))
    write_card(folder, with_scores(card.read_text(encoding="utf-8"), known))
    return True
