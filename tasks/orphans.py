"""Sub-flow and task runs left Running by a run whose process died.

When a container is stopped or a node dies, the worker (or Prefect's own handler) marks the top flow run
Crashed, but the iteration and stage sub-flows that ran in the same process stay Running in the UI for
good. A resumed run closes them: every unfinished descendant of an earlier, ended `lion-<run id>` flow run
is set Crashed, with a message naming the flow run that carries the run on; so is whatever an earlier
attempt of the same flow run (the UI's Retry) left under it.
"""

from __future__ import annotations

import logging
from uuid import UUID

from prefect import get_client
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterName,
    FlowRunFilterParentFlowRunId,
    FlowRunFilterState,
    FlowRunFilterStateType,
    TaskRunFilter,
    TaskRunFilterFlowRunId,
    TaskRunFilterState,
    TaskRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.states import Crashed

from tasks.limits import release_leases_held_by

log = logging.getLogger("lion.orphans")

LIVE = [StateType.SCHEDULED, StateType.PENDING, StateType.RUNNING]
ENDED = [StateType.CRASHED, StateType.FAILED, StateType.CANCELLED]
"""A top run that ended so; a Completed one finished its sub-flows itself."""
PAGE = 200
"""The API's default page size: every read pages on until a short page."""


def crash_orphaned_runs(run_id: str, current: UUID | str | None, current_name: str = "",
                        dead_attempt: UUID | str | None = None) -> int:
    """Set Crashed every unfinished flow and task run under an ended `lion-<run_id>` flow run, or already under
    `current` (the flow run starting now, before it starts anything); returns how many flow runs it closed.
    `dead_attempt` is a `lion-<run_id>` flow run known to be dead though it may still show Running (the
    last holder of the run's lock, lion_core.runs.run_lock: a `kill -9` leaves it so): it is closed with
    what is under it, and on lion's local API the slots its task runs held are given back at once instead
    of when their leases expire. Best effort: the run goes on if the API refuses."""
    message = f"its process ended with lion-{run_id}'s; the run continues in flow run {current_name or current}"
    closed = 0
    dead = str(dead_attempt) if dead_attempt else None
    crashed_tasks: set[UUID] = set()
    try:
        with get_client(sync_client=True) as client:
            earlier = [r for r in _all(client.read_flow_runs, flow_filter=FlowFilter(name=FlowFilterName(any_=["lion"])),
                                       flow_run_filter=FlowRunFilter(
                                           name=FlowRunFilterName(any_=[f"lion-{run_id}"]),
                                           state=FlowRunFilterState(type=FlowRunFilterStateType(any_=ENDED + LIVE))))
                       if str(r.id) != str(current) and (r.state_type in ENDED or str(r.id) == dead)]
            for r in earlier:
                if r.state_type in LIVE:
                    client.set_flow_run_state(r.id, Crashed(message=message), force=True)
                    closed += 1
            roots = [r.id for r in earlier]
            # Called before this flow starts anything, so whatever already hangs under it is left from an
            # earlier attempt of this same flow run (the UI's Retry).
            roots += [UUID(str(current))] if current else []
            below = _descendants(client, roots)
            for r in below:
                if r.state_type in LIVE:
                    client.set_flow_run_state(r.id, Crashed(message=message), force=True)
                    closed += 1
            flows = roots + [r.id for r in below]
            for i in range(0, len(flows), 200):
                for t in _all(client.read_task_runs, task_run_filter=TaskRunFilter(
                        flow_run_id=TaskRunFilterFlowRunId(any_=flows[i:i + 200]),
                        state=TaskRunFilterState(type=TaskRunFilterStateType(any_=LIVE)))):
                    client.set_task_run_state(t.id, Crashed(message=message), force=True)
                    crashed_tasks.add(t.id)
        if crashed_tasks:
            release_leases_held_by(crashed_tasks)
    except Exception as e:  # noqa: BLE001 - a tidy UI is not worth stopping a paid run for
        log.warning("could not close the runs left Running by an earlier attempt of %s: %s", run_id, e)
    if closed:
        log.info("closed %d flow runs left Running by an earlier attempt of run %s", closed, run_id)
    return closed


def _descendants(client, roots: list[UUID]) -> list:
    """Every flow run below `roots`, level by level."""
    out, level = [], roots
    while level:
        runs = [r for i in range(0, len(level), PAGE) for r in _all(client.read_flow_runs, flow_run_filter=FlowRunFilter(
            parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=level[i:i + PAGE])))]
        out += runs
        level = [r.id for r in runs]
    return out


def _all(read, **filters) -> list:
    """Every match of a paged read (`read_flow_runs`, `read_task_runs`)."""
    out, offset = [], 0
    while True:
        page = read(**filters, limit=PAGE, offset=offset)
        out += page
        if len(page) < PAGE:
            return out
        offset += PAGE
