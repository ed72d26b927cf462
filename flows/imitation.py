"""Imitation: the teacher answers the Train Pool; the student is fine-tuned on those answers."""

from __future__ import annotations

from prefect import flow, get_run_logger

from flows.shards import answer_pool
from lion_core import checkpoints
from lion_core.llm.embedded import released_for_training
from lion_core.results import FinalResult, ImitationResult
from lion_core.store import PoolRef
from tasks.common import RunContext
from tasks.pools import training_set
from tasks.student import base_model, publish_final_checkpoint, record_checkpoint, train


@flow(name="imitation", flow_run_name="iter-{k}-imitation")
def imitation(ctx: RunContext, k: int, train_pool: PoolRef, previous_checkpoint: str | None = None) -> ImitationResult:
    """The teacher's answers for the Train Pool, and the student fine-tuned on them (see `training.init_from`)."""
    answers, usage = answer_pool(ctx, k, "teacher_answers_train", train_pool)
    inputs = training_set(ctx, k, answers, base_model(ctx), previous_checkpoint)
    if train_pool.rows:
        with released_for_training():  # the embedded servers' memory goes to the fine-tune meanwhile
            checkpoint = train(ctx, k, inputs.answers, inputs.start_from)
    else:  # the last generation accepted nothing: nothing new to learn, the student stays as it was
        get_run_logger().warning("iteration %d: the Train Pool is empty; carrying %s forward", k, previous_checkpoint)
        checkpoint = previous_checkpoint
    record = record_checkpoint(ctx, k, bool(train_pool.rows), inputs.answers.rows if train_pool.rows else 0)
    return ImitationResult(teacher_answers=answers, training=inputs,
                           train_data=inputs.answers if train_pool.rows else None, checkpoint=checkpoint,
                           checkpoint_record=record, usage=usage)


@flow(name="final-imitation", flow_run_name="iter-{n}-final-imitation")
def final_imitation(ctx: RunContext, n: int) -> FinalResult:
    """After the last iteration: the teacher answers the final Train Pool (the instructions the last
    generation paid for) and the student is trained on it once more; published as `<checkpoints>/final`."""
    store = ctx.store()
    imitated = imitation(ctx, n, store.ref(n, "train_pool"), checkpoints.previous_checkpoint(store, ctx.config, n))
    return FinalResult(final_checkpoint=publish_final_checkpoint(ctx, n, imitated), imitation=imitated)
