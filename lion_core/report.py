"""What one iteration did, as a summary dict, a markdown report and table rows (no Prefect here)."""

from __future__ import annotations

import base64
import json
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from lion_core.store import RunStore, exists, join_uri, read_bytes, write_bytes_atomic

_WORD = re.compile(r"[A-Za-z][A-Za-z'-]*")
_SKIP = {"please", "now", "kindly", "can", "could", "would", "you", "i", "the", "a", "an"}


def leading_word(instruction: str) -> str:
    """First content word, lower-cased: the verb of an imperative, the wh-word of a question."""
    for w in _WORD.findall(instruction or ""):
        w = w.lower()
        if w not in _SKIP:
            return w
    return "(none)"


USAGE_FIELDS = ("requests", "cached", "calls", "retries", "failures", "prompt_tokens", "completion_tokens", "cost_usd")


def merge_usage(tables: Iterable[Sequence[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Sum accounting rows (role, stage) from several tasks."""
    acc: dict[tuple[str, str], dict[str, Any]] = {}
    for table in tables:
        for row in table:
            key = (row["role"], row["stage"])
            cur = acc.setdefault(key, {"role": row["role"], "stage": row["stage"], **{f: 0 for f in USAGE_FIELDS}})
            for f in USAGE_FIELDS:
                cur[f] += row.get(f, 0) or 0
    return [acc[k] for k in sorted(acc)]


def per_role(usage: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    by: dict[str, dict[str, Any]] = defaultdict(lambda: {f: 0 for f in USAGE_FIELDS})
    for row in usage:
        for f in USAGE_FIELDS:
            by[row["role"]][f] += row[f]
    return [{"role": r, **v} for r, v in sorted(by.items())]


def iteration_summary(
    *, run_id: str, iteration: int, pools: dict[str, int], next_pools: dict[str, int], discrimination: dict[str, Any],
    generation: dict[str, Any], usage: Sequence[dict[str, Any]], checkpoint: str, files: dict[str, str],
    plots: dict[str, str], checkpoint_record: dict[str, Any] | None = None,
) -> dict[str, Any]:
    d, g = discrimination, generation
    record = checkpoint_record or {}
    return {
        "run_id": run_id, "iteration": iteration,
        "train_pool": pools["train_pool"], "cache_pool": pools["cache_pool"],
        "next_train_pool": next_pools["train_pool"], "next_cache_pool": next_pools["cache_pool"],
        "judged": d["items"], "hard": d["hard"], "easy": d["easy"], "unresolved": d["unresolved"],
        "missing_answer": d.get("missing_answer", 0), "hard_fraction": d["hard_fraction"],
        "coverage_teacher_first": d["coverage_teacher_first"], "coverage_student_first": d["coverage_student_first"],
        "order_inconsistency_rate": d["order_inconsistency_rate"],
        "mean_teacher_score": d["mean_teacher_score"], "mean_student_score": d["mean_student_score"],
        "generation_target": g["target"], "accepted": g["accepted_total"], "accepted_hard": g["accepted"].get("hard", 0),
        "accepted_easy": g["accepted"].get("easy", 0), "generation_requests": g["requests"],
        "generation_outcome": g["outcome"], "rejected_by_reason": dict(g["rejected_by_reason"]),
        "usage": list(usage), "usage_by_role": per_role(usage),
        "cost_usd": sum(r["cost_usd"] for r in usage), "checkpoint": checkpoint, "files": dict(files),
        "plots": dict(plots),
        "checkpoint_status": record.get("status"), "checkpoint_carried_from": record.get("source_iteration"),
        "checkpoint_reason": record.get("reason"),
        "hard_empty_answer": d.get("hard_empty_answer", 0), "zero_scores": d.get("zero_scores", 0),
        "unresolved_by_reason": dict(d.get("unresolved_by_reason", {})),
        "truncated_by_reason": dict(g.get("truncated_by_reason", {})), "by_seed_input": dict(g.get("by_seed_input", {})),
        "fresh_draws": g.get("fresh_draws", 0), "stored_draws": g.get("stored_draws", 0),
    }


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1%}"


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def summary_markdown(s: dict[str, Any]) -> str:
    lines = [
        f"# Lion run `{s['run_id']}`, iteration {s['iteration']}",
        "",
        "| pool | this iteration | next iteration |", "|---|---|---|",
        f"| Train Pool | {s['train_pool']} | {s['next_train_pool']} |",
        f"| Cache Pool | {s['cache_pool']} | {s['next_cache_pool']} |",
        "",
        "## Discrimination",
        f"- judged {s['judged']}: **{s['hard']} hard**, {s['easy']} easy, {s['unresolved']} unresolved, "
        f"{s['missing_answer']} without an answer; hard fraction {_pct(s['hard_fraction'])}",
        f"- referee coverage: teacher first {_pct(s['coverage_teacher_first'])}, student first "
        f"{_pct(s['coverage_student_first'])}; order inconsistency {_pct(s['order_inconsistency_rate'])}",
        f"- mean scores: teacher {_num(s['mean_teacher_score'])}, student {_num(s['mean_student_score'])}; "
        f"{s.get('zero_scores', 0)} scores of 0",
        f"- {s.get('hard_empty_answer', 0)} hard because the student's answer was empty (not sent to the referee)",
    ]
    if s.get("unresolved_by_reason"):
        lines.append("- unresolved orders by reason: " + ", ".join(f"{k} {v}" for k, v in s["unresolved_by_reason"].items()))
    lines += [
        "",
        "## Generation",
        f"- accepted {s['accepted']} of {s['generation_target']} asked ({s['accepted_hard']} hard, "
        f"{s['accepted_easy']} easy) in {s['generation_requests']} requests: {s['generation_outcome']}",
        f"- draws: {s.get('fresh_draws', 0)} asked now, {s.get('stored_draws', 0)} from the store (a resume of this iteration)",
        "- truncated replies by reason: " + (", ".join(f"{k} {v}" for k, v in s.get("truncated_by_reason", {}).items())
                                             or "none"),
    ]
    for kind, f in s.get("by_seed_input", {}).items():
        lines.append(f"- seeds {kind.replace('_', ' ')}: {f['requests']} requests, {f['truncated']} truncated, "
                     f"{f['accepted']} accepted")
    if s["rejected_by_reason"]:
        lines += ["", "| rejected because | candidates |", "|---|---|"]
        lines += [f"| {reason} | {n} |" for reason, n in sorted(s["rejected_by_reason"].items(), key=lambda x: -x[1])]
    lines += ["", "## API usage", "| role | requests | from store | calls | retries | failures | prompt tokens "
              "| completion tokens | cost (USD) |", "|---|---|---|---|---|---|---|---|---|"]
    for r in s["usage_by_role"]:
        lines.append(f"| {r['role']} | {r['requests']} | {r['cached']} | {r['calls']} | {r['retries']} | {r['failures']} "
                     f"| {r['prompt_tokens']} | {r['completion_tokens']} | {r['cost_usd']:.4f} |")
    status = s.get("checkpoint_status")
    carried = (f" (carried from iteration {s.get('checkpoint_carried_from')}: {s.get('checkpoint_reason')})"
               if status == "carried" else f" ({status})" if status else "")
    lines += ["", f"Student checkpoint: `{s['checkpoint']}`{carried}", "", "## Files"]
    lines += [f"- {name}: `{uri}`" for name, uri in sorted(s["files"].items())]
    lines += [f"- plot {name}: `{uri}`" for name, uri in sorted(s["plots"].items())]
    return "\n".join(lines)


TABLE_FIELDS = ("iteration", "train_pool", "cache_pool", "hard", "easy", "unresolved", "hard_fraction",
                "order_inconsistency_rate", "accepted", "next_cache_pool", "cost_usd")


def summary_row(s: dict[str, Any]) -> dict[str, Any]:
    return {f: s[f] for f in TABLE_FIELDS}


SUMMARY_FILE = "summary.json"


def write_summary(store: RunStore, k: int, summary: dict[str, Any]) -> str:
    """Keep the iteration's summary with the run, so a resumed run can report every iteration."""
    uri = join_uri(store.iteration_uri(k), SUMMARY_FILE)
    write_bytes_atomic(uri, json.dumps(summary, indent=2, default=str).encode())
    return uri


def read_summaries(store: RunStore) -> list[dict[str, Any]]:
    out = []
    for k in store.iterations():
        uri = join_uri(store.iteration_uri(k), SUMMARY_FILE)
        if exists(uri):
            out.append(json.loads(read_bytes(uri)))
    return out


def summary_text_table(summaries: Sequence[dict[str, Any]], scores: Mapping[Any, Mapping[str, Any]] | None = None) -> str:
    """The plain-text table `lion run` prints at the end. With `scores` (keyed "base", iteration, "final":
    an evaluation of the run's checkpoints) it adds each checkpoint's relative score and its 95% interval,
    with rows for the base student and the final checkpoint."""
    head = ("iter", "train", "cache", "hard", "easy", "unres.", "hard %", "order inc.", "new", "next cache", "cost $")
    rows = [(str(s["iteration"]), str(s["train_pool"]), str(s["cache_pool"]), str(s["hard"]), str(s["easy"]),
             str(s["unresolved"]), f"{s['hard_fraction']:.0%}", f"{s['order_inconsistency_rate']:.0%}",
             str(s["accepted"]), str(s["next_cache_pool"]), f"{s['cost_usd']:.4f}") for s in summaries]
    if scores is not None:
        def cells(key: Any) -> tuple[str, str]:
            s = scores.get(key, scores.get(str(key)))  # a result read back from JSON has string keys
            if not s or s.get("relative_score") is None:
                return "-", "-"
            ci = s.get("relative_score_ci95")
            return f"{s['relative_score']:.1%}", f"{ci[0]:.1%}-{ci[1]:.1%}" if ci else "-"
        head = (*head, "rel. score", "95% interval")
        blank = ("",) * 10
        rows = [("base", *blank, *cells("base")), *((*r, *cells(s["iteration"])) for r, s in zip(rows, summaries)),
                ("final", *blank, *cells("final"))]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    fmt = "  ".join(f"{{:>{w}}}" for w in widths)
    return "\n".join([fmt.format(*head), *(fmt.format(*r) for r in rows)])


def charts_markdown(charts: dict[str, bytes]) -> str:
    """The charts as images embedded in markdown (`data:` URIs): the Prefect UI shows them in the
    artifact page, where a `file://` link to the PNG would not open."""
    lines = ["## Charts"]
    for name, png in charts.items():
        title = name.replace("_", " ")
        lines += ["", f"### {title}", "", f"![{title}](data:image/png;base64,{base64.b64encode(png).decode()})"]
    return "\n".join(lines)


def final_markdown(run_id: str, final: str, info: dict[str, Any], usage: Sequence[dict[str, Any]],
                   resumes: Sequence[dict[str, Any]] = ()) -> str:
    """The run's deliverable: where it is, what it was trained on, and what the final imitation cost."""
    if info.get("status") == "trained":
        what = (f"trained after the last iteration on the final Train Pool of iteration {info['iteration']} "
                f"({info['train_rows']} teacher answers)")
    else:
        what = f"carried from iteration {info.get('source_iteration')}: {info.get('reason')}"
    lines = [f"# Lion run `{run_id}`: final checkpoint", "", f"`{final}`", "", f"- {what}",
             "", "## API usage of the final imitation", "| role | requests | from store | calls | prompt tokens "
             "| completion tokens | cost (USD) |", "|---|---|---|---|---|---|---|"]
    for r in per_role(usage):
        lines.append(f"| {r['role']} | {r['requests']} | {r['cached']} | {r['calls']} | {r['prompt_tokens']} "
                     f"| {r['completion_tokens']} | {r['cost_usd']:.4f} |")
    if resumes:
        lines += ["", "## Resumed with changed operations settings", "| resumed at | field | before | after |",
                  "|---|---|---|---|"]
        lines += [f"| {r['at']} | `{c['field']}` | `{c['old']}` | `{c['new']}` |" for r in resumes for c in r["changed"]]
    return "\n".join(lines)
