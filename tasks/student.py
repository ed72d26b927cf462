"""Student tasks: the launched fine-tune and the checkpoint's answers (local GPU work, no API)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task

from lion_core import checkpoints
from lion_core.limits import GPU_TAG
from lion_core.llm.responses import ResponseStore
from lion_core.results import CheckpointRecord, ImitationResult
from lion_core.store import PoolRef
from lion_core.student.answers import student_answer_stage
from lion_core.student.launch import TrainOptions, train_student
from lion_core.student.models import student_base_model
from tasks.common import RunContext, input_cache_key, transient


@task(name="base-model", tags=["lion", "student"], retries=1, retry_condition_fn=transient)
def base_model(ctx: RunContext) -> str:
    """The student's starting weights as a local folder or model id (the embedded one is converted once,
    a pruned one is made once)."""
    return student_base_model(ctx.config.student)


def _train_cache_key(context: Any, parameters: dict[str, Any]) -> str:
    # `max_steps` came later: at its default it stays out of the key, so older runs' fine-tunes stay cached
    return input_cache_key(context, {k: v for k, v in parameters.items() if (k, v) != ("max_steps", -1)})


@task(name="train-student", tags=["lion", GPU_TAG], task_run_name="iter-{k}-train-student", retries=1,
      retry_delay_seconds=10, retry_condition_fn=transient,
      cache_key_fn=_train_cache_key, persist_result=True)
def train(ctx: RunContext, k: int, answers: PoolRef, start_from: str, max_steps: int = -1) -> str:
    """Fine-tune in a launched subprocess (deepspeed / torchrun / accelerate) with the config's timeout;
    its process group is stopped on timeout, cancellation or the death of this process. A retry
    resumes from the last Trainer checkpoint; a finished checkpoint is returned as it is. `max_steps`
    (the one-shot baseline's): this many optimizer steps, the schedule fitted to them; -1: the config's."""
    out = ctx.config.storage.checkpoint_dir(ctx.run_id, k)
    final = train_student(ctx.config, answers, start_from, out, run_id=ctx.run_id, iteration=k,
                          options=TrainOptions(max_steps=max_steps))
    checkpoints.write_checkpoint_card(ctx.store(), ctx.config, k, final, base_model=ctx.config.student.model,
                                      start_from=start_from, trained_on=answers,
                                      title=f"Lion student, run {ctx.run_id}, iteration {k}")
    return ctx.store().run_relative(str(Path(final)))  # valid wherever the run folder goes


@task(name="record-checkpoint", tags=["lion", "store"], task_run_name="iter-{k}-record-checkpoint", retries=2,
      retry_delay_seconds=5, retry_condition_fn=transient,
      cache_key_fn=input_cache_key, persist_result=True)
def record_checkpoint(ctx: RunContext, k: int, trained: bool, train_rows: int) -> CheckpointRecord:
    """Commit which checkpoint iteration k ends with: the one it trained, or (nothing to train on) the one
    it carries forward, with the reason."""
    return checkpoints.record_checkpoint(ctx.store(), k, ctx.config, trained=trained, train_rows=train_rows)


@task(name="publish-final-checkpoint", tags=["lion", "store"], task_run_name="final-checkpoint", retries=1,
      retry_condition_fn=transient)
def publish_final_checkpoint(ctx: RunContext, n: int, imitated: ImitationResult) -> str:
    """`<checkpoints>/final`: the checkpoint trained on the last Train Pool (or carried, with the reason),
    with its model card; the run's deliverable."""
    store, config, record = ctx.store(), ctx.config, imitated.checkpoint_record
    final = config.storage.final_checkpoint_dir(ctx.run_id)
    checkpoints.publish_final(record.path, final, info={"run_id": ctx.run_id, "iteration": n, **record.model_dump(),
                                                        "selection": config.loop.selection},
                              runs_root=ctx.config.storage.runs_root)
    checkpoints.write_checkpoint_card(store, config, n, final, base_model=config.student.model,
                                      start_from=imitated.training.start_from, trained_on=imitated.train_data,
                                      title=f"Lion student, run {ctx.run_id}, final",
                                      note=checkpoints.final_card_note(record, n))
    checkpoints.mark_complete(final)
    return final


@task(name="student-answers", tags=["lion", GPU_TAG], task_run_name="iter-{k}-{name}", retries=1,
      retry_condition_fn=transient,
      cache_key_fn=input_cache_key, persist_result=True)
def student_answers(ctx: RunContext, k: int, pool: PoolRef, checkpoint: str, name: str = "student_answers") -> PoolRef:
    """The checkpoint's answers for every instruction of a pool, each persisted as its batch ends."""
    with ResponseStore.open(ctx.config.storage) as responses:
        return student_answer_stage(ctx.store(), k, pool, checkpoint, ctx.config, responses, name=name)
