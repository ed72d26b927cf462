"""Whether a live process holds a run, as `lion status` asks it: without taking the run's lock."""

from lion_core.config import parse_config
from lion_core.runs import run_holder, run_lock
from lion_core.status import StageStatus, estimate_left

ROLE = {"base_url": "http://127.0.0.1:9/v1", "model": "m"}


def _config(tmp_path, store: str):
    return parse_config({"teacher": ROLE, "referee": ROLE, "generator": ROLE,
                         "storage": {"runs_root": str(tmp_path / "runs"), "response_store": store}})


def test_a_run_held_by_a_live_process_names_it_and_is_free_once_it_ends(tmp_path, store_location):
    config = _config(tmp_path, store_location)
    assert run_holder(config, "r1") is None
    with run_lock(config, "r1", owner="flow-a"):
        assert "pid" in (run_holder(config, "r1") or "")
        assert run_holder(config, "r2") is None
    assert run_holder(config, "r1") is None
    with run_lock(config, "r1", owner="flow-b"):  # looking never took it
        assert run_holder(config, "r1") is not None


def test_the_estimate_takes_the_stage_under_way_at_its_pace_and_later_ones_as_long_as_last_time():
    stages = [StageStatus(iteration="0", stage="a", state="done", seconds=10.0),
              StageStatus(iteration="0", stage="b", state="done", seconds=20.0),
              StageStatus(iteration="1", stage="a", state="running", done=1, total=4, seconds=5.0),
              StageStatus(iteration="1", stage="b", state="waiting")]
    assert estimate_left(stages) == 5.0 * 3 + 20.0
    unknown = [*stages, StageStatus(iteration="final", stage="c", state="waiting")]
    assert estimate_left(unknown) is None  # a stage never timed: no guess
