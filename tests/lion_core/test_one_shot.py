"""The one-shot baseline's step count: what the loop's fine-tunes of the same pools would have taken."""

import pytest

from lion_core.config.student import TrainingConfig
from lion_core.one_shot import fine_tune_steps, loop_fine_tunes, one_shot_steps


def _training(**kw) -> TrainingConfig:
    return TrainingConfig(launcher="python", deepspeed_config=None, **kw)


@pytest.mark.parametrize(("examples", "steps"), [(0, 0), (1, 3), (128, 3), (129, 6), (1000, 24), (4096, 96)])
def test_a_fine_tunes_steps_follow_the_trainers_arithmetic(examples, steps):
    # 128 per step = 4 per device x 32 accumulated; a last partial group of batches still makes a step
    assert fine_tune_steps(_training(effective_batch_size=128, per_device_batch_size=4, num_train_epochs=3),
                           examples) == steps


def test_fractional_epochs_round_up_and_max_steps_is_what_each_fine_tune_runs():
    assert fine_tune_steps(_training(effective_batch_size=8, per_device_batch_size=8, num_train_epochs=0.5), 30) == 2
    # the Trainer runs exactly max_steps, going over a small pool again as often as it takes
    assert fine_tune_steps(_training(effective_batch_size=8, per_device_batch_size=8, max_steps=5), 800) == 5
    assert fine_tune_steps(_training(effective_batch_size=8, per_device_batch_size=8, max_steps=5), 8) == 5
    assert fine_tune_steps(_training(effective_batch_size=8, per_device_batch_size=8, max_steps=5), 0) == 0


def test_the_loop_trains_each_pool_or_everything_so_far():
    assert loop_fine_tunes("previous", [100, 40, 30]) == [100, 40, 30]
    assert loop_fine_tunes("base", [100, 40, 30]) == [100, 140, 170]
    assert loop_fine_tunes("base", [100, 0, 30]) == [100, 0, 130]  # an empty Train Pool: no fine-tune


def test_the_one_shot_runs_for_the_loops_steps_in_all():
    t = _training(effective_batch_size=8, per_device_batch_size=8, num_train_epochs=1)
    assert one_shot_steps(t, [16, 8, 0]) == 2 + 1  # an empty Train Pool trains nothing
    assert one_shot_steps(t.model_copy(update={"init_from": "base"}), [16, 8, 0]) == 2 + 3
    assert one_shot_steps(t.model_copy(update={"max_steps": 4}), [16, 8, 0]) == 4 + 4
