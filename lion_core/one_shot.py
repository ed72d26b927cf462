"""The one-shot baseline (`loop.selection: one_shot`): what the Lion loop of the same config would have
trained for, so that a single fine-tune on all the instructions at once gets the same optimizer steps.

The loop fine-tunes once per iteration and once more on the last generation (the final imitation), on the
Train Pool's instructions the teacher answered (an empty pool trains nothing). With `training.init_from:
previous` each fine-tune sees that iteration's Train Pool; with `base` it sees every Train Pool so far. The
steps of one fine-tune follow the Hugging Face Trainer's own arithmetic: batches per device per epoch,
grouped by the gradient accumulation (a last partial group still makes a step), times the epochs, rounded
up; a set `training.max_steps` is what each fine-tune runs, whatever the epochs say, as in the loop.
Examples the trainer drops as too long for `training.max_length` are not known before tokenizing and are
counted here (a prompt that fills the context alone is rare at the paper's 1,024 tokens).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

from lion_core.config.student import TrainingConfig
from lion_core.files import exists, join_uri, read_bytes, write_bytes_atomic
from lion_core.results import UsageRow
from lion_core.store import PoolRef, RunStore

ROUND_USAGE = "one_shot_generation.json"


def fine_tune_steps(training: TrainingConfig, examples: int) -> int:
    """Optimizer steps of one fine-tune on `examples` examples (0 for none: nothing is trained)."""
    if examples <= 0:
        return 0
    if training.max_steps:  # the Trainer runs exactly these, going over the data as often as it takes
        return training.max_steps
    batches = math.ceil(math.ceil(examples / training.world_size) / training.per_device_batch_size)
    accumulation = training.gradient_accumulation_steps
    per_epoch = max(batches // accumulation + int(batches % accumulation > 0), 1)
    return math.ceil(training.num_train_epochs * per_epoch)


def loop_fine_tunes(init_from: str, train_pool_rows: Sequence[int]) -> list[int]:
    """The examples of each fine-tune the loop makes, given its Train Pools' answered rows (iteration 0's
    seeds, then each generation's new instructions, the last one trained in the final imitation). `base`:
    every pool so far, the instruction ids being distinct across pools. An empty pool: no fine-tune."""
    if init_from == "previous":
        return list(train_pool_rows)
    return [sum(train_pool_rows[: i + 1]) if n else 0 for i, n in enumerate(train_pool_rows)]


def answered_per_pool(store: RunStore, n: int, answers: PoolRef) -> list[int]:
    """Of the teacher's answers for every instruction, the usable ones (what the fine-tune keeps: `ok` with
    text) that belong to each Train Pool 0..n: what each of the loop's fine-tunes would have had."""
    usable = {r["id"] for r in store.read_table(answers).select(["id", "status", "answer"]).to_pylist()
              if r["status"] == "ok" and r["answer"]}
    return [sum(1 for i in store.read_table(store.ref(k, "train_pool")).column("id").to_pylist() if i in usable)
            for k in range(n + 1)]


def one_shot_steps(training: TrainingConfig, train_pool_rows: Sequence[int]) -> int:
    """The loop's optimizer steps in total: what the one-shot baseline's single fine-tune runs for."""
    return sum(fine_tune_steps(training, n) for n in loop_fine_tunes(training.init_from, train_pool_rows))


def save_round_usage(store: RunStore, k: int, usage: Sequence[UsageRow]) -> None:
    """What generation round k asked of the API, kept beside its pools: a resume that skips the round still
    reports what the whole run asked."""
    write_bytes_atomic(join_uri(store.iteration_uri(k), ROUND_USAGE), json.dumps([u.model_dump() for u in usage]).encode())


def round_usage(store: RunStore, k: int) -> list[UsageRow]:
    """Round k's usage as `save_round_usage` kept it; empty when the process stopped before it was kept."""
    uri = join_uri(store.iteration_uri(k), ROUND_USAGE)
    return [UsageRow(**u) for u in json.loads(read_bytes(uri))] if exists(uri) else []
