"""Student tasks: the launched fine-tune and the checkpoint's answers (local GPU work, no API)."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from lion_core import stages
from lion_core.llm.responses import ResponseStore
from lion_core.store import PoolRef
from lion_core.student.launch import train_student
from lion_core.student.models import resolve_model
from tasks.common import RunContext, input_cache_key, transient


@task(name="base-model", tags=["lion", "student"], retries=1, retry_condition_fn=transient)
def base_model(ctx: RunContext) -> str:
    """The student's starting weights as a local folder or model id (the embedded one is converted once)."""
    return resolve_model(ctx.config.student.model)


@task(name="train-student", tags=["lion", "gpu"], retries=1, retry_delay_seconds=10, retry_condition_fn=transient,
      cache_key_fn=input_cache_key, persist_result=True)
def train(ctx: RunContext, k: int, answers: PoolRef, start_from: str) -> str:
    """Fine-tune in a launched subprocess (deepspeed / torchrun / accelerate) with the config's timeout;
    its process group is stopped on timeout, cancellation or the death of this process. A retry
    resumes from the last Trainer checkpoint; a finished checkpoint is returned as it is."""
    out = ctx.config.storage.checkpoint_dir(ctx.run_id, k)
    final = train_student(ctx.config, answers, start_from, out, run_id=ctx.run_id, iteration=k)
    return str(Path(final))


@task(name="student-answers", tags=["lion", "gpu"], retries=1, retry_condition_fn=transient,
      cache_key_fn=input_cache_key, persist_result=True)
def student_answers(ctx: RunContext, k: int, pool: PoolRef, checkpoint: str, name: str = "student_answers") -> PoolRef:
    """The checkpoint's answers for every instruction of a pool, each persisted as its batch ends."""
    with ResponseStore(ctx.config.storage.response_store_path()) as responses:
        return stages.student_answer_stage(ctx.store(), k, pool, checkpoint, ctx.config, responses, name=name)
