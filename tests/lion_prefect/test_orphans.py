"""A resumed run closes the sub-flows that a killed attempt left Running (seen with `docker stop`); a
stopped `lion` closes the runs it tagged."""

from uuid import uuid4

from prefect import flow, get_client, task
from prefect.states import Completed, Crashed, Running

from lion_prefect import orphans
from lion_prefect.orphans import crash_orphaned_runs, crash_tagged_runs


@flow(name="lion")
def lion_stub():
    pass


@flow(name="lion-iteration")
def stage_stub():
    pass


@task
def step():
    pass


def _tree(client, run_id: str, root_state, child_states):
    """A `lion-<run_id>` flow run in `root_state`, a chain of sub-flows below it in `child_states` (each the
    child of the one before, as iteration -> stage), and one Running task run in the deepest."""
    root = client.create_flow_run(lion_stub, name=f"lion-{run_id}", state=root_state)
    parent, made = root, []
    for i, state in enumerate(child_states):
        link = client.create_task_run(step, flow_run_id=parent.id, dynamic_key=f"sub-{i}", state=Running())
        child = client.create_flow_run(stage_stub, name=f"{run_id}-sub-{i}", parent_task_run_id=link.id, state=state)
        made.append(child)
        parent = child
    leaf_task = client.create_task_run(step, flow_run_id=parent.id, dynamic_key="leaf", state=Running())
    return root, made, leaf_task


def test_running_sub_flows_under_an_ended_attempt_are_crashed_and_others_left_alone(prefect_harness):
    with get_client(sync_client=True) as client:
        _, (iteration, stage), leaf = _tree(client, "r1", Crashed(), [Running(), Running()])
        _, (done,), _ = _tree(client, "r1b", Crashed(), [Completed()])
        _, (other,), other_leaf = _tree(client, "other", Crashed(), [Running()])
        current = client.create_flow_run(lion_stub, name="lion-r1", state=Running())

        assert crash_orphaned_runs("r1", current.id, "lion-r1 (resumed)") == 2

        def state(r):
            return client.read_flow_run(r.id).state

        assert state(iteration).type.value == "CRASHED" and state(stage).type.value == "CRASHED"
        assert "continues in flow run lion-r1 (resumed)" in state(stage).message
        assert client.read_task_run(leaf.id).state.type.value == "CRASHED"
        # another run's orphans are its own resume's business; a finished sub-flow stays finished
        assert state(other).type.value == "RUNNING" and client.read_task_run(other_leaf.id).state.type.value == "RUNNING"
        assert state(done).type.value == "COMPLETED"
        assert state(current).type.value == "RUNNING"
        assert crash_orphaned_runs("r1", current.id) == 0  # nothing left to close


def test_a_retried_flow_run_closes_what_its_earlier_attempt_left_under_it(prefect_harness):
    with get_client(sync_client=True) as client:
        root, (iteration,), _ = _tree(client, "r2", Running(), [Running()])
        assert crash_orphaned_runs("r2", root.id) == 1
        assert client.read_flow_run(iteration.id).state.type.value == "CRASHED"
        assert client.read_flow_run(root.id).state.type.value == "RUNNING"


def test_no_api_is_a_warning_not_a_failure(monkeypatch, caplog):
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:9/api"}):
        assert crash_orphaned_runs("r3", None) == 0
    assert "could not close the runs" in caplog.text


def test_a_killed_attempt_still_shown_running_is_closed_when_the_run_lock_names_it(prefect_harness):
    """`kill -9` of `lion` leaves its whole tree Running (its local API died with it); the run's lock names
    that flow run as its last, dead holder. Any other Running attempt may be alive (on another machine):
    left alone."""
    with get_client(sync_client=True) as client:
        killed, (iteration,), leaf = _tree(client, "r4", Running(), [Running()])
        elsewhere, _, elsewhere_leaf = _tree(client, "r4", Running(), [Running()])
        current = client.create_flow_run(lion_stub, name="lion-r4", state=Running())
        assert crash_orphaned_runs("r4", current.id) == 0
        assert client.read_flow_run(killed.id).state.type.value == "RUNNING"
        assert crash_orphaned_runs("r4", current.id, dead_attempt=killed.id) == 2
        assert client.read_flow_run(elsewhere.id).state.type.value == "RUNNING"
        assert client.read_task_run(elsewhere_leaf.id).state.type.value == "RUNNING"
        assert client.read_flow_run(killed.id).state.type.value == "CRASHED"
        assert client.read_flow_run(iteration.id).state.type.value == "CRASHED"
        assert client.read_task_run(leaf.id).state.type.value == "CRASHED"
        assert client.read_flow_run(current.id).state.type.value == "RUNNING"


def test_a_stopped_process_closes_every_run_it_tagged_page_by_page(prefect_harness, monkeypatch):
    """What `lion` forced to exit does (lion_cli.supervision): every unfinished run with its process tag
    is closed, over as many pages as they take; finished runs and other processes' runs are left alone."""
    monkeypatch.setattr(orphans, "PAGE", 2)
    tag, other_tag = f"lion-process-{uuid4().hex[:12]}", f"lion-process-{uuid4().hex[:12]}"
    with get_client(sync_client=True) as client:
        mine = [client.create_flow_run(lion_stub, name=f"mine-{i}", tags=[tag], state=Running()) for i in range(5)]
        finished = client.create_flow_run(lion_stub, name="mine-done", tags=[tag], state=Completed())
        other = client.create_flow_run(lion_stub, name="other", tags=[other_tag], state=Running())
        my_tasks = [client.create_task_run(step, flow_run_id=mine[0].id, dynamic_key=f"t-{i}", extra_tags=[tag],
                                           state=Running()) for i in range(5)]
        other_task = client.create_task_run(step, flow_run_id=other.id, dynamic_key="t", extra_tags=[other_tag],
                                            state=Running())

        assert crash_tagged_runs(tag, "stopped") == 5

        assert {client.read_flow_run(r.id).state.type.value for r in mine} == {"CRASHED"}
        assert {client.read_task_run(t.id).state.type.value for t in my_tasks} == {"CRASHED"}
        assert client.read_flow_run(mine[0].id).state.message == "stopped"
        assert client.read_flow_run(finished.id).state.type.value == "COMPLETED"
        assert client.read_flow_run(other.id).state.type.value == "RUNNING"
        assert client.read_task_run(other_task.id).state.type.value == "RUNNING"
        assert crash_tagged_runs(tag, "stopped") == 0
