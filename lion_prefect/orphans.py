"""Flow and task runs left unfinished by a process that ended, set Crashed.

Two callers share one way of doing it: every read is paged to its end before any run is changed (a run
set Crashed leaves a filter on live states, so the next page would skip runs).

- A resumed run closes what an earlier attempt left Running. When a container is stopped or a node
  dies, the worker (or Prefect's own handler) marks the top flow run Crashed, but the iteration and
  stage sub-flows that ran in the same process stay Running in the UI for good. Every unfinished
  descendant of an earlier, ended `lion-<run id>` flow run is set Crashed, with a message naming the flow
  run that carries the run on; so is whatever an earlier attempt of the same flow run (the UI's Retry)
  left under it (`crash_orphaned_runs`).
- `lion`, stopped and out of time for Prefect's own orderly stop, closes the runs that carry its process
  tag (`crash_tagged_runs`).
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
    FlowRunFilterTags,
    TaskRunFilter,
    TaskRunFilterFlowRunId,
    TaskRunFilterState,
    TaskRunFilterStateType,
    TaskRunFilterTags,
)
from prefect.client.schemas.objects import StateType
from prefect.states import Crashed

from lion_prefect.leases import release_leases_held_by

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
            closed += _crash_flow_runs(client, earlier, message)
            roots = [r.id for r in earlier]
            # Called before this flow starts anything, so whatever already hangs under it is left from an
            # earlier attempt of this same flow run (the UI's Retry).
            roots += [UUID(str(current))] if current else []
            below = _descendants(client, roots)
            closed += _crash_flow_runs(client, below, message)
            flows = roots + [r.id for r in below]
            for i in range(0, len(flows), PAGE):
                crashed_tasks |= _crash_task_runs(client, message, flow_run_id=TaskRunFilterFlowRunId(any_=flows[i:i + PAGE]))
        if crashed_tasks:
            release_leases_held_by(crashed_tasks)
    except Exception as e:  # noqa: BLE001 - a tidy UI is not worth stopping a paid run for
        log.warning("could not close the runs left Running by an earlier attempt of %s: %s", run_id, e)
    if closed:
        log.info("closed %d flow runs left Running by an earlier attempt of run %s", closed, run_id)
    return closed


def crash_tagged_runs(tag: str, message: str) -> int:
    """Set Crashed every unfinished task run and flow run tagged `tag`, as Prefect does on an orderly stop;
    returns how many flow runs it closed. Raises what the API raises: the caller decides what an
    unreachable API means."""
    with get_client(sync_client=True) as client:
        _crash_task_runs(client, message, tags=TaskRunFilterTags(all_=[tag]))
        return _crash_flow_runs(client, _all(client.read_flow_runs, flow_run_filter=FlowRunFilter(
            tags=FlowRunFilterTags(all_=[tag]), state=FlowRunFilterState(type=FlowRunFilterStateType(any_=LIVE)))), message)


def _crash_flow_runs(client, runs: list, message: str) -> int:
    """Set Crashed those of `runs` (read in full already) that are unfinished; returns how many."""
    live = [r for r in runs if r.state_type in LIVE]
    for r in live:
        client.set_flow_run_state(r.id, Crashed(message=message), force=True)
    return len(live)


def _crash_task_runs(client, message: str, **match) -> set[UUID]:
    """Set Crashed every unfinished task run that `match` (TaskRunFilter fields) selects; returns their ids."""
    runs = _all(client.read_task_runs, task_run_filter=TaskRunFilter(
        **match, state=TaskRunFilterState(type=TaskRunFilterStateType(any_=LIVE))))
    for t in runs:
        client.set_task_run_state(t.id, Crashed(message=message), force=True)
    return {t.id for t in runs}


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
    """Every match of a paged read (`read_flow_runs`, `read_task_runs`), read to its last page."""
    out, offset = [], 0
    while True:
        page = read(**filters, limit=PAGE, offset=offset)
        out += page
        if len(page) < PAGE:
            return out
        offset += PAGE
