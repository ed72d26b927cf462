"""Where a run stands, from its files alone (`lion status`): the run folder's manifests, the fine-tunes' logs
and the response store. No Prefect server is asked, so it works while the run goes on, from another
terminal or machine, and on a run whose flow runs are long gone.

Each stage of an iteration ends with a file committed to the iteration's manifest, which records when; a
stage's time is the gap to the commit before it. Items done in a stage under way are counted where they
are kept: the answers and verdicts in the response store (request by request, as a resume would find
them), the fine-tune's optimizer steps in its log. The estimate of what is left is the pace so far: the
stage under way at its own rate, the stages after it at the length they took in the last iteration that
had them. It is an estimate and says so; a run not yet through one iteration has none for later ones.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from lion_core.checkpoints import checkpoint_record, final_is_complete
from lion_core.config import RunConfig
from lion_core.discrimination.judging import judge_request
from lion_core.discrimination.stage import judge_items
from lion_core.imitation.answers import answer_request
from lion_core.llm.responses import ResponseStore
from lion_core.report import read_final_report, read_summaries
from lion_core.results import Judging, UsageRow
from lion_core.runs import recorded_target
from lion_core.shards import committed
from lion_core.store import RunStore, resolve_uri
from lion_core.student.train import parse_step_line

LOOP_STAGES = (  # (manifest entry that ends it, what it is, what its committed rows are)
    ("teacher_answers_train", "teacher answers, Train Pool", "answers"),
    ("checkpoint", "fine-tune", "steps"),
    ("teacher_answers_cache", "teacher answers, Cache Pool", "answers"),
    ("student_answers", "student answers", "answers"),
    ("judgments", "referee verdicts", "items judged"),
    ("candidates", "generation", "candidates"),
)


class StageStatus(BaseModel):
    iteration: str
    """`0`, `1`, ... or `final` (the final imitation)."""
    stage: str
    state: str
    """`done`, `running` (the first stage not finished) or `waiting`."""
    done: int | None = None
    total: int | None = None
    unit: str = "items"
    seconds: float | None = None
    """Its time: commit to commit when done; since the last commit while running."""
    failures: dict[str, int] = {}
    """Requests of the stage whose last try failed, by reason (the store keeps them to retry)."""


class RunStatus(BaseModel):
    run_id: str
    run_uri: str
    selection: str
    iterations: int
    state: str
    """`running` (a live process holds the run), `stopped` (none does and it is not finished: resume it) or
    `finished` (the final checkpoint is published)."""
    holder: str | None = None
    """The process holding the run, as its lock names it."""
    current: StageStatus | None
    stages: list[StageStatus]
    spend: dict[str, dict[str, float]]
    """Per role: `paid_calls` and `cost_usd` (every paid reply, usable or not, the stage under way included),
    from the response store."""
    usage: dict[str, dict[str, float]] = {}
    """Per role, over the finished iterations and the final imitation (their summaries): `requests` asked,
    of them `cached` (answered by the store), `failures`, `cost_usd`."""
    spend_error: str | None = None
    estimate_left_s: float | None
    latest_checkpoint: str | None
    last_activity: str | None


def _at(stamp: str) -> dt.datetime:
    return dt.datetime.fromisoformat(stamp)


def _plan(config: RunConfig, n: int) -> list[tuple[str, str, str]]:
    """(iteration, manifest k, entry) of every stage of a run of n iterations, in order."""
    if config.loop.selection == "one_shot":
        out = [(str(k), str(k), "candidates") for k in range(n)]
        return out + [("final", str(n), "teacher_answers_train"), ("final", str(n), "checkpoint")]
    out = [(str(k), str(k), entry) for k in range(n) for entry, _, _ in LOOP_STAGES]
    return out + [("final", str(n), "teacher_answers_train"), ("final", str(n), "checkpoint")]


def _name(entry: str, one_shot: bool) -> str:
    if one_shot and entry == "teacher_answers_train":
        return "teacher answers, every instruction"
    return next(name for e, name, _ in LOOP_STAGES if e == entry)


def _done_figure(store: RunStore, config: RunConfig, k: int, entry: str, rows: int) -> tuple[int, str]:
    """What a finished stage made: its rows, or a fine-tune's optimizer steps."""
    if entry == "checkpoint":
        folder = Path(resolve_uri(config.storage.checkpoint_dir(store.run_id, k), config.storage.runs_root))
        info = folder / "final" / "lion_checkpoint.json"
        if info.is_file():
            return int(json.loads(info.read_text()).get("global_step") or 0), "steps"
        return rows, "checkpoint"
    return rows, next(unit for e, _, unit in LOOP_STAGES if e == entry)


def _stored(responses: ResponseStore | None, keys: Sequence[str]) -> tuple[int | None, dict[str, int]]:
    """How many of `keys` the store has answered, and its failures among the rest by reason."""
    if responses is None:
        return None, {}
    found = responses.lookup_many(keys)
    done = sum(1 for result, _ in found.values() if result is not None)
    failures = Counter(previous[2] for result, previous in found.values() if result is None and previous[2])
    return done, dict(failures)


def _under_way(store: RunStore, config: RunConfig, responses: ResponseStore | None, k: int, entry: str,
               one_shot: bool) -> tuple[int | None, int | None, str, dict[str, int]]:
    """(done, total, unit, failures) of the stage under way: counted where its items are kept."""
    pool = committed(store, k, "cache_pool" if one_shot or entry != "teacher_answers_train" else "train_pool")
    if pool is None:
        return None, None, "items", {}
    if entry in ("teacher_answers_train", "teacher_answers_cache"):
        rows = store.read_pool(pool).to_dict("records")
        role = config.teacher
        keys = [answer_request(r, role.sampling).key(role.base_url, role.model) for r in rows]
        done, failures = _stored(responses, keys)
        return done, len(keys), "answers", failures
    if entry == "checkpoint":
        log = Path(resolve_uri(config.storage.checkpoint_dir(store.run_id, k), config.storage.runs_root)) / "train.log"
        steps = [s for s in map(parse_step_line, log.read_text(errors="replace").splitlines())
                 if s] if log.is_file() else []
        return (steps[-1][0], steps[-1][1], "steps", {}) if steps else (None, None, "steps", {})
    if entry == "judgments":
        teacher, student = committed(store, k, "teacher_answers_cache"), committed(store, k, "student_answers")
        if teacher is None or student is None:
            return None, None, "verdicts", {}
        items, _ = judge_items(store, store.read_pool(pool).to_dict("records"), Judging(teacher=teacher, student=student))
        s, role = config.referee.sampling, config.referee
        keys = [judge_request(i, first, role.prompt_style, s.temperature, s.top_p, s.max_tokens).key(role.base_url, role.model)
                for i in items for first in (True, False) if i.student_answer.strip()]
        done, failures = _stored(responses, keys)
        return done, len(keys), "verdicts", failures
    if entry == "candidates":
        return None, config.loop.new_instructions_per_iteration, "new instructions", {}
    return None, pool.rows, "answers", {}


def run_status(store: RunStore, config: RunConfig, responses: ResponseStore | None, holder: str | None = None,
               now: dt.datetime | None = None) -> RunStatus:
    """The run's state from its files; `responses`: its response store (None: not reachable); `holder`: the
    live process holding the run (`lion_core.runs.run_holder`), None when none does."""
    now = now or dt.datetime.now(dt.timezone.utc)
    one_shot = config.loop.selection == "one_shot"
    n = recorded_target(store) or config.loop.iterations  # `lion run -n` may have asked for more or fewer
    plan = _plan(config, n)
    manifests = {k: store.manifest(k) for k in {int(k) for _, k, _ in plan}}
    committed_at = [i for i, (_, k, entry) in enumerate(plan) if manifests[int(k)] and entry in manifests[int(k)].files]
    stages: list[StageStatus] = []
    last: dt.datetime | None = None
    current: StageStatus | None = None
    for i, (it, k_text, entry) in enumerate(plan):
        k = int(k_text)
        manifest = manifests[k]
        name = _name(entry, one_shot)
        start = _at(manifest.files["train_pool"].created_at) if manifest and "train_pool" in manifest.files else None
        if committed_at and i < committed_at[-1] and not (manifest and entry in manifest.files):
            stages.append(StageStatus(iteration=it, stage=name, state="done"))  # a run from before the stage's file
        elif manifest and entry in manifest.files:
            ended = _at(manifest.files[entry].created_at)
            begun = max(filter(None, (last, start)), default=ended)
            figure, unit = _done_figure(store, config, k, entry, manifest.files[entry].rows)
            stages.append(StageStatus(iteration=it, stage=name, state="done", seconds=(ended - begun).total_seconds(),
                                      done=figure, total=figure, unit=unit))
            last = ended
        elif current is None and start is not None:
            done, total, unit, failures = _under_way(store, config, responses, k, entry, one_shot)
            begun = max(filter(None, (last, start)))
            current = StageStatus(iteration=it, stage=name, state="running", done=done, total=total, unit=unit,
                                  seconds=(now - begun).total_seconds(), failures=failures)
            stages.append(current)
        else:
            stages.append(StageStatus(iteration=it, stage=name, state="waiting"))
    final = Path(config.storage.final_checkpoint_dir(store.run_id))
    published = (read_final_report(store) or {}).get("iteration") == n  # kept with the run, wherever it lives
    finished = current is None and (published or final_is_complete(final))
    state = "running" if holder else "finished" if finished else "stopped"
    if current is not None and state == "stopped":
        current.state = "stopped"
    return RunStatus(run_id=store.run_id, run_uri=store.run_uri, selection=config.loop.selection,
                     iterations=n, state=state, holder=holder,
                     current=current, stages=stages, spend={}, usage=usage_by_role(store),
                     estimate_left_s=estimate_left(stages) if state == "running" else None,
                     latest_checkpoint=str(final) if finished else _latest_checkpoint(store, config),
                     last_activity=last.isoformat() if last else None)


def estimate_left(stages: Sequence[StageStatus]) -> float | None:
    """The stage under way at its own pace, each later one as long as its last finished namesake took."""
    took = {s.stage: s.seconds for s in stages if s.state == "done" and s.seconds is not None}
    left = 0.0
    for s in stages:
        if s.state == "running":
            if s.done and s.total and s.seconds is not None:
                left += s.seconds * (s.total - s.done) / s.done
            elif s.stage in took:
                left += max(0.0, took[s.stage] - (s.seconds or 0.0))
            else:
                return None
        elif s.state == "waiting":
            if s.stage not in took:
                return None
            left += took[s.stage]
    return left


def usage_by_role(store: RunStore) -> dict[str, dict[str, float]]:
    """What the finished iterations and the final imitation asked of each role (their summaries' usage)."""
    final = read_final_report(store) or {}
    rows = [u for s in read_summaries(store) for u in s.usage_by_role] + [UsageRow(**u) for u in final.get("usage", [])]
    out: dict[str, dict[str, float]] = {}
    for u in rows:
        row = out.setdefault(u.role, {"requests": 0, "cached": 0, "failures": 0, "cost_usd": 0.0})
        for field in row:
            row[field] += getattr(u, field)
    return out


def _latest_checkpoint(store: RunStore, config: RunConfig) -> str | None:
    for k in sorted(store.iterations(), reverse=True):
        record = checkpoint_record(store, k)
        if record is not None:
            return resolve_uri(record.path, config.storage.runs_root)
    return None


def with_spend(status: RunStatus, responses: ResponseStore | None, error: str | None = None) -> RunStatus:
    """The run's spend per role, as its response store keeps it."""
    if responses is None:
        return status.model_copy(update={"spend_error": error})
    spent, calls = responses.spent(status.run_id), responses.paid_calls(status.run_id)
    spend = {role: {"paid_calls": calls.get(role, 0), "cost_usd": spent.get(role, 0.0)} for role in sorted({*spent, *calls})}
    return status.model_copy(update={"spend": spend})


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


def status_text(s: RunStatus) -> str:
    """One screen: where the run is, what each stage took, what it has cost, what is left."""
    where = (f"iteration {s.current.iteration}, {s.current.stage}" if s.current else
             "the final checkpoint is published" if s.state == "finished" else
             "every stage done, publishing the final checkpoint and evaluating" if s.state == "running" else
             "every stage done, the final checkpoint not published")
    held = f" (held by {s.holder})" if s.holder else ""
    lines = [f"run {s.run_id}  ({s.run_uri})",
             f"  {s.state}{held}: {where};   selection {s.selection}, {s.iterations} iteration(s)",
             "", f"  {'iter':>5}  {'stage':<30} {'state':<8} {'done':>24} {'time':>8}"]
    for st in s.stages:
        done = (f"{st.done if st.done is not None else '?'}/{st.total} {st.unit}" if st.state == "running" and st.total
                else f"{st.total} {st.unit}" if st.state == "done" and st.total is not None else "")
        lines.append(f"  {st.iteration:>5}  {st.stage:<30} {st.state:<8} {done:>24} "
                     f"{_duration(st.seconds) if st.seconds is not None else '':>8}")
    if s.current and s.current.failures:
        lines += ["", "  failed so far in this stage (kept to retry), by reason: "
                  + ", ".join(f"{reason} {n}" for reason, n in sorted(s.current.failures.items()))]
    lines += ["", f"  {'role':<10} {'requests':>9} {'from store':>10} {'failed':>7} {'paid calls':>11} {'cost $':>10}"
                  "   (requests: finished iterations; paid: so far, from the store)"]
    if s.spend_error:
        lines.append(f"  the response store could not be read: {s.spend_error}")
    none = {"requests": 0, "cached": 0, "failures": 0, "paid_calls": 0, "cost_usd": 0.0}
    roles = sorted({*s.usage, *s.spend})
    for role in roles:
        u, p = {**none, **s.usage.get(role, {})}, {**none, **s.spend.get(role, {})}
        lines.append(f"  {role:<10} {int(u['requests']):>9} {int(u['cached']):>10} {int(u['failures']):>7} "
                     f"{int(p['paid_calls']):>11} {p['cost_usd']:>10.4f}")
    lines.append(f"  {'total':<10} {int(sum(s.usage.get(r, none)['requests'] for r in roles)):>9} {'':>10} {'':>7} "
                 f"{int(sum(s.spend.get(r, none)['paid_calls'] for r in roles)):>11} "
                 f"{sum(s.spend.get(r, none)['cost_usd'] for r in roles):>10.4f}")
    lines.append("")
    if s.state == "running":
        lines.append(f"  estimated time left: {_duration(s.estimate_left_s)}" + (
            " (the pace so far)" if s.estimate_left_s is not None else " (no finished iteration to go by yet)"))
    elif s.state == "stopped":
        lines.append(f"  no process holds the run: resume it with `lion run --config <its config> --resume {s.run_id}`")
    lines.append(f"  latest checkpoint: {s.latest_checkpoint or 'none yet'}")
    if s.last_activity:
        lines.append(f"  last commit: {s.last_activity}")
    return "\n".join(lines)


def status_json(s: RunStatus) -> dict[str, Any]:
    return s.model_dump(mode="json")
