"""What iteration k's fine-tune starts from and trains on (`training.init_from`)."""

from __future__ import annotations

from lion_core.config import RunConfig
from lion_core.imitation.answers import ANSWERS_SCHEMA_VERSION, AnswerRow
from lion_core.results import TrainingInputs
from lion_core.rows import rows_of, to_table
from lion_core.shards import commit_table
from lion_core.store import RunStore


def imitation_inputs(store: RunStore, k: int, config: RunConfig, base_model: str,
                     previous_checkpoint: str | None) -> TrainingInputs:
    """`previous` (the paper's way, the default): iteration k-1's checkpoint, on iteration k's teacher
    answers for the Train Pool. `base`: the base model, on the teacher answers of every Train Pool so
    far (written as `train_answers_all`, de-duplicated by instruction id, the first answer kept)."""
    answers = store.ref(k, "teacher_answers_train")
    if config.training.init_from == "previous":
        return TrainingInputs(start_from=previous_checkpoint if k > 0 and previous_checkpoint else base_model,
                              answers=answers)
    if k == 0:
        return TrainingInputs(start_from=base_model, answers=answers)
    seen: dict[str | None, AnswerRow] = {}
    parents = []
    for i in range(k + 1):
        ref = store.ref(i, "teacher_answers_train")
        parents.append(ref)
        for r in rows_of(store.read_table(ref), AnswerRow, f"iteration {i} teacher_answers_train"):
            seen.setdefault(r.id, r)
    table = to_table(seen.values(), AnswerRow)
    return TrainingInputs(start_from=base_model,
                          answers=commit_table(store, k, "train_answers_all", table, ANSWERS_SCHEMA_VERSION, parents))
