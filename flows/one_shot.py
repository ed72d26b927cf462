"""The one-shot baseline (`loop.selection: one_shot`): what a Lion run of the same config distils, without
the loop. The generator writes as many rounds of new instructions as the run has iterations, each from
examples drawn uniformly from the Cache Pool (no student answers, no referee); then the teacher answers the
seeds and every new instruction, and the student is fine-tuned once, from the base model, for the
optimizer steps the loop's fine-tunes would have taken in all. Resumable as the loop is: finished rounds
are committed iterations, and every answered request comes from the response store.
"""

from __future__ import annotations

from prefect import flow, get_run_logger

from flows.shards import answer_pool, through_batches
from lion_core.llm.embedded import released_for_training
from lion_core.one_shot import answered_per_pool, one_shot_steps, round_usage, save_round_usage
from lion_core.results import BatchWork, FinalResult, ImitationResult, TrainingInputs, merge_usage
from tasks.api import generate_instructions
from tasks.common import RunContext, configured
from tasks.pools import update_pools
from tasks.student import base_model, publish_final_checkpoint, record_checkpoint, train


@flow(name="one-shot", flow_run_name="{ctx.run_id}-one-shot")
def one_shot(ctx: RunContext, start: int, n: int) -> FinalResult:
    """Rounds `start`..n-1 of generation from random examples, then one imitation of everything."""
    store = ctx.store()
    for k in range(start, n):
        cache_pool = store.ref(k, "cache_pool")
        batched = through_batches(ctx, "generator", "generation",
                                  BatchWork(kind="generation", k=k, pool=cache_pool, judgments=None))
        made = configured(generate_instructions, ctx.config)(ctx, k, cache_pool, None)  # no judgments: random examples
        save_round_usage(store, k, merge_usage([batched, made.usage]))  # before the commit that ends the round
        update_pools(ctx, k, cache_pool, made.candidates)

    everything = store.ref(n, "cache_pool")
    answers, usage = answer_pool(ctx, n, "teacher_answers_train", everything)
    answered = answered_per_pool(store, n, answers)  # what each of the loop's fine-tunes would have trained on
    steps = one_shot_steps(ctx.config.training, answered)
    get_run_logger().info("one-shot: %d instructions, %d answered (%s per Train Pool), one fine-tune of %d steps",
                          everything.rows, sum(answered), " + ".join(map(str, answered)), steps)
    start_from = base_model(ctx)
    with released_for_training():  # the embedded servers' memory goes to the fine-tune meanwhile
        checkpoint = train(ctx, n, answers, start_from, max_steps=steps)
    record = record_checkpoint(ctx, n, True, answers.rows)
    imitated = ImitationResult(teacher_answers=answers, training=TrainingInputs(start_from=start_from, answers=answers),
                               train_data=answers, checkpoint=checkpoint, checkpoint_record=record,
                               usage=merge_usage([*(round_usage(store, k) for k in range(n)), usage]))
    return FinalResult(final_checkpoint=publish_final_checkpoint(ctx, n, imitated), imitation=imitated)
