"""What one iteration did, as a typed summary, a markdown report and table rows (no Prefect here)."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from lion_core.files import exists, join_uri, read_bytes, write_bytes_atomic
from lion_core.results import (
    DiscriminationResult,
    FinalResult,
    GenerationResult,
    ImitationResult,
    IterationSummary,
    Pools,
    UsageRow,
    merge_usage,
    per_role,
    total_cost,
)
from lion_core.store import RunStore

_WORD = re.compile(r"[A-Za-z][A-Za-z'-]*")
_SKIP = {"please", "now", "kindly", "can", "could", "would", "you", "i", "the", "a", "an"}


def leading_word(instruction: str) -> str:
    """First content word, lower-cased: the verb of an imperative, the wh-word of a question."""
    for w in _WORD.findall(instruction or ""):
        w = w.lower()
        if w not in _SKIP:
            return w
    return "(none)"


def iteration_summary(run_id: str, k: int, pools: Pools, imitated: ImitationResult, judged: DiscriminationResult,
                      generated: GenerationResult) -> IterationSummary:
    """Iteration k's figures, from its pools and what its three stages returned."""
    d, g, record = judged.report, generated.report, imitated.checkpoint_record
    usage = merge_usage([imitated.usage, judged.usage, generated.usage])
    return IterationSummary(
        run_id=run_id, iteration=k,
        train_pool=pools.train_pool.rows, cache_pool=pools.cache_pool.rows,
        next_train_pool=generated.next_pools.train_pool.rows, next_cache_pool=generated.next_pools.cache_pool.rows,
        judged=d.items, hard=d.hard, easy=d.easy, unresolved=d.unresolved, missing_answer=d.missing_answer,
        hard_fraction=d.hard_fraction, coverage_teacher_first=d.coverage_teacher_first,
        coverage_student_first=d.coverage_student_first, order_inconsistency_rate=d.order_inconsistency_rate,
        mean_teacher_score=d.mean_teacher_score, mean_student_score=d.mean_student_score,
        generation_target=g.target, accepted=g.accepted_total, accepted_hard=g.accepted.get("hard", 0),
        accepted_easy=g.accepted.get("easy", 0), generation_requests=g.requests, generation_outcome=g.outcome,
        rouge_filter_seconds=g.filter_seconds, rejected_by_reason=g.rejected_by_reason, usage=usage,
        usage_by_role=per_role(usage), cost_usd=total_cost(usage),
        checkpoint=imitated.checkpoint,
        files={"teacher_answers_train": imitated.teacher_answers.uri, "judgments": judged.judgments.uri,
               "candidates": generated.candidates.uri, "next_train_pool": generated.next_pools.train_pool.uri,
               "next_cache_pool": generated.next_pools.cache_pool.uri},
        checkpoint_status=record.status, checkpoint_carried_from=record.source_iteration,
        checkpoint_reason=record.reason, hard_empty_answer=d.hard_empty_answer, zero_scores=d.zero_scores,
        unresolved_by_reason=d.unresolved_by_reason, truncated_by_reason=g.truncated_by_reason,
        by_seed_input=g.by_seed_input, fresh_draws=g.fresh_draws, stored_draws=g.stored_draws,
    )


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1%}"


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def summary_markdown(s: IterationSummary) -> str:
    lines = [
        f"# Lion run `{s.run_id}`, iteration {s.iteration}",
        "",
        "| pool | this iteration | next iteration |", "|---|---|---|",
        f"| Train Pool | {s.train_pool} | {s.next_train_pool} |",
        f"| Cache Pool | {s.cache_pool} | {s.next_cache_pool} |",
        "",
        "## Discrimination",
        f"- judged {s.judged}: **{s.hard} hard**, {s.easy} easy, {s.unresolved} unresolved, "
        f"{s.missing_answer} without an answer; hard fraction {_pct(s.hard_fraction)}",
        f"- referee coverage: teacher first {_pct(s.coverage_teacher_first)}, student first "
        f"{_pct(s.coverage_student_first)}; order inconsistency {_pct(s.order_inconsistency_rate)}",
        f"- mean scores: teacher {_num(s.mean_teacher_score)}, student {_num(s.mean_student_score)}; "
        f"{s.zero_scores} scores of 0",
        f"- {s.hard_empty_answer} hard because the student's answer was empty (not sent to the referee)",
    ]
    if s.unresolved_by_reason:
        lines.append("- unresolved orders by reason: " + ", ".join(f"{k} {v}" for k, v in s.unresolved_by_reason.items()))
    lines += [
        "",
        "## Generation",
        f"- accepted {s.accepted} of {s.generation_target} asked ({s.accepted_hard} hard, "
        f"{s.accepted_easy} easy) in {s.generation_requests} requests: {s.generation_outcome}",
        f"- draws: {s.fresh_draws} asked now, {s.stored_draws} from the store (a resume of this iteration)",
        f"- ROUGE-L novelty filter: {s.rouge_filter_seconds:.1f} s",
        "- truncated replies by reason: " + (", ".join(f"{k} {v}" for k, v in s.truncated_by_reason.items())
                                             or "none"),
    ]
    for kind, f in s.by_seed_input.items():
        lines.append(f"- seeds {kind.replace('_', ' ')}: {f.requests} requests, {f.truncated} truncated, "
                     f"{f.accepted} accepted")
    if s.rejected_by_reason:
        lines += ["", "| rejected because | candidates |", "|---|---|"]
        lines += [f"| {reason} | {n} |" for reason, n in sorted(s.rejected_by_reason.items(), key=lambda x: -x[1])]
    lines += ["", "## API usage", "| role | mode | requests | from store | calls | retries | failures | prompt tokens "
              "| completion tokens | cost (USD) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in s.usage_by_role:
        lines.append(f"| {r.role} | {r.mode} | {r.requests} | {r.cached} | {r.calls} | {r.retries} | {r.failures} "
                     f"| {r.prompt_tokens} | {r.completion_tokens} | {r.cost_usd:.4f} |")
    status = s.checkpoint_status
    carried = (f" (carried from iteration {s.checkpoint_carried_from}: {s.checkpoint_reason})"
               if status == "carried" else f" ({status})" if status else "")
    lines += ["", f"Student checkpoint: `{s.checkpoint}`{carried}", "", "## Files"]
    lines += [f"- {name}: `{uri}`" for name, uri in sorted(s.files.items())]
    lines += [f"- plot {name}: `{uri}`" for name, uri in sorted(s.plots.items())]
    return "\n".join(lines)


TABLE_FIELDS = ("iteration", "train_pool", "cache_pool", "hard", "easy", "unresolved", "hard_fraction",
                "order_inconsistency_rate", "accepted", "next_cache_pool", "cost_usd")


def summary_row(s: IterationSummary) -> dict[str, Any]:
    """The key figures as one row of the UI's table artifact."""
    return {f: getattr(s, f) for f in TABLE_FIELDS}


SUMMARY_FILE = "summary.json"
FINAL_REPORT = "final.json"


def write_summary(store: RunStore, k: int, summary: IterationSummary) -> str:
    """Keep the iteration's summary with the run, so a resumed run can report every iteration."""
    uri = join_uri(store.iteration_uri(k), SUMMARY_FILE)
    write_bytes_atomic(uri, json.dumps(summary.model_dump(mode="json"), indent=2).encode())
    return uri


def read_final_report(store: RunStore) -> dict[str, Any] | None:
    """The run's `final.json` (its final checkpoint's record and the final imitation's usage), if written."""
    uri = join_uri(store.run_uri, FINAL_REPORT)
    return json.loads(read_bytes(uri)) if exists(uri) else None


def read_summaries(store: RunStore) -> list[IterationSummary]:
    """Every iteration's summary that was written, in order."""
    out = []
    for k in store.iterations():
        uri = join_uri(store.iteration_uri(k), SUMMARY_FILE)
        if exists(uri):
            out.append(IterationSummary.model_validate_json(read_bytes(uri)))
    return out


def summary_text_table(summaries: Sequence[IterationSummary], scores: Mapping[Any, Mapping[str, Any]] | None = None) -> str:
    """The plain-text table `lion run` prints at the end. With `scores` (keyed "base", iteration, "final":
    an evaluation of the run's checkpoints) it adds each checkpoint's relative score and its 95% interval,
    with rows for the base student and the final checkpoint."""
    head = ("iter", "train", "cache", "hard", "easy", "unres.", "hard %", "order inc.", "new", "next cache", "cost $")
    rows = [(str(s.iteration), str(s.train_pool), str(s.cache_pool), str(s.hard), str(s.easy),
             str(s.unresolved), f"{s.hard_fraction:.0%}", f"{s.order_inconsistency_rate:.0%}",
             str(s.accepted), str(s.next_cache_pool), f"{s.cost_usd:.4f}") for s in summaries]
    if scores is not None:
        def cells(key: Any) -> tuple[str, str]:
            s = scores.get(key, scores.get(str(key)))  # a result read back from JSON has string keys
            if not s or s.get("relative_score") is None:
                return "-", "-"
            ci = s.get("relative_score_ci95")
            return f"{s['relative_score']:.1%}", f"{ci[0]:.1%}-{ci[1]:.1%}" if ci else "-"
        head = (*head, "rel. score", "95% interval")
        blank = ("",) * 10
        rows = [("base", *blank, *cells("base")), *((*r, *cells(s.iteration)) for r, s in zip(rows, summaries)),
                ("final", *blank, *cells("final"))]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    fmt = "  ".join(f"{{:>{w}}}" for w in widths)
    return "\n".join([fmt.format(*head), *(fmt.format(*r) for r in rows)])


def artifact_key(*parts: Any) -> str:
    """A Prefect artifact key from parts: keys allow lower-case letters, digits and dashes only."""
    raw = "-".join(str(p) for p in parts).lower()
    return "".join(c if c.isalnum() else "-" for c in raw).strip("-")


def file_link(uri: str) -> str:
    """A link the UI can show for a stored file: a URI as it is, a local path as `file://`."""
    return uri if "://" in uri else f"file://{uri}"


def final_info(n: int, final: FinalResult) -> dict[str, Any]:
    """What the run's `final.json` keeps: the final checkpoint's record, where it is, and what the final
    imitation cost."""
    usage = final.imitation.usage
    return {**final.imitation.checkpoint_record.model_dump(), "iteration": n, "final_checkpoint": final.final_checkpoint,
            "usage": [r.model_dump() for r in usage], "cost_usd": total_cost(usage)}


def charts_markdown(charts: dict[str, bytes]) -> str:
    """The charts as images embedded in markdown (`data:` URIs): the Prefect UI shows them in the
    artifact page, where a `file://` link to the PNG would not open."""
    lines = ["## Charts"]
    for name, png in charts.items():
        title = name.replace("_", " ")
        lines += ["", f"### {title}", "", f"![{title}](data:image/png;base64,{base64.b64encode(png).decode()})"]
    return "\n".join(lines)


def final_markdown(run_id: str, final: str, info: Mapping[str, Any], usage: Sequence[UsageRow],
                   resumes: Sequence[dict[str, Any]] = ()) -> str:
    """The run's deliverable: where it is, what it was trained on, and what the final imitation cost."""
    one_shot = info.get("selection") == "one_shot"
    if one_shot:
        what = (f"the one-shot baseline: trained once, from the base model, on the teacher's answers to all "
                f"{info['train_rows']} instructions (the seeds and every generation round's)")
    elif info.get("status") == "trained":
        what = (f"trained after the last iteration on the final Train Pool of iteration {info['iteration']} "
                f"({info['train_rows']} teacher answers)")
    else:
        what = f"carried from iteration {info.get('source_iteration')}: {info.get('reason')}"
    lines = [f"# Lion run `{run_id}`: final checkpoint", "", f"`{final}`", "", f"- {what}",
             "", "## API usage of the run" if one_shot else "## API usage of the final imitation",
             "| role | mode | requests | from store | calls "
             "| prompt tokens | completion tokens | cost (USD) |", "|---|---|---|---|---|---|---|---|"]
    for r in per_role(usage):
        lines.append(f"| {r.role} | {r.mode} | {r.requests} | {r.cached} | {r.calls} | {r.prompt_tokens} "
                     f"| {r.completion_tokens} | {r.cost_usd:.4f} |")
    if resumes:
        lines += ["", "## Resumed with changed operations settings", "| resumed at | field | before | after |",
                  "|---|---|---|---|"]
        lines += [f"| {r['at']} | `{c['field']}` | `{c['old']}` | `{c['new']}` |" for r in resumes for c in r["changed"]]
    return "\n".join(lines)
