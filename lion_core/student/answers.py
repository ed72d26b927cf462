"""The student checkpoint's answers to a pool, committed in the run's store: the Cache Pool's in
discrimination, an evaluation's questions for each checkpoint. Generation runs in a child process
(lion_core.student.infer), so the parent never holds the model."""

from __future__ import annotations

from lion_core.config import RunConfig
from lion_core.imitation.answers import ANSWERS_SCHEMA_VERSION, AnswerRow
from lion_core.llm.responses import ResponseStore
from lion_core.rows import to_table
from lion_core.shards import commit_table
from lion_core.store import PoolRef, RunStore, resolve_uri


def student_answer_stage(store: RunStore, k: int, pool: PoolRef, checkpoint: str, config: RunConfig,
                         responses: ResponseStore, name: str = "student_answers") -> PoolRef:
    """The checkpoint's answers for every instruction of `pool`, committed as iteration k's `name`."""
    from lion_core.student.infer import student_answers_in_child

    rows = store.read_pool(pool).to_dict("records")
    # A checkpoint is a run's, under the configured runs root (an evaluation's own store lives elsewhere).
    model = resolve_uri(checkpoint, config.storage.runs_root)
    answers = student_answers_in_child(model, rows, config.student.generation, responses.reopen,
                                       prompt_format=config.student.prompt_format, seed=config.loop.random_seed + k,
                                       dtype=config.student.dtype)
    return commit_table(store, k, name, to_table([AnswerRow(**a) for a in answers], AnswerRow),
                        ANSWERS_SCHEMA_VERSION, [pool])
