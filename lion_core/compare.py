"""`lion compare`: the final students of several runs judged on the same questions, against the same
reference answers, by the same judge, in both orders; for each pair of runs the per-question paired
difference of their relative scores with a 95% bootstrap interval, beside what each run cost.

Runs are comparable only when everything that makes the yardstick is the same: the evaluation set, the
reference model and its sampling, the judge and its sampling. The loop's settings (selection, tau, the
hard:easy ratio, iterations) are what a comparison is for, and may differ.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from itertools import combinations
from typing import Any

from lion_core.errors import LionError
from lion_core.evaluation import BOOTSTRAP_RESAMPLES, relative_score_of
from lion_core.results import UsageRow

# ResultRow's columns as relative_score_of reads them (the reference in the teacher's place)
_COLUMNS = {"reference_score_reference_first": "t_score_t_first", "student_score_reference_first": "s_score_t_first",
            "reference_score_student_first": "t_score_s_first", "student_score_student_first": "s_score_s_first"}


class Incomparable(LionError):
    """Runs whose evaluation settings differ: their scores are measured with different yardsticks."""


def _questions(source: str | None) -> str | None:
    """The eval set by its content where it can be read (the same file elsewhere is the same yardstick)."""
    import hashlib
    import os

    if source and os.path.isfile(source):
        with open(source, "rb") as fh:
            return "sha256:" + hashlib.sha256(fh.read()).hexdigest()
    return source


def evaluation_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """What a comparison holds equal, from a run's config (as run.json keeps it): the questions, the
    reference and the judge (the referee when no judge is set), each with its model, sampling and how its
    replies are read, and the students' prompt format (every final student is asked in the config's).
    Endpoints are where a model is served, not what it is: they may differ."""
    ev = config.get("evaluation") or {}

    def role(spec: Mapping[str, Any] | None) -> dict[str, Any] | None:
        if not spec:
            return None
        return {k: spec.get(k) for k in ("model", "sampling", "prompt_style", "max_reasks") if k in spec}

    return {"evaluation.eval_set": _questions(ev.get("eval_set")), "evaluation.reference": role(ev.get("reference")),
            "evaluation.judge": role(ev.get("judge") or config.get("referee")),
            "student.prompt_format": (config.get("student") or {}).get("prompt_format")}


def check_comparable(configs: Mapping[str, Mapping[str, Any]]) -> None:
    """Refuse runs whose evaluation settings differ, naming each field and what each run has."""
    if len([r for r in configs if r != "--config"]) < 2:
        raise LionError("lion compare needs at least two different runs")
    settings = {run: evaluation_settings(cfg) for run, cfg in configs.items()}
    first, *rest = settings
    problems = []
    for field in settings[first]:
        values = {run: s[field] for run, s in settings.items()}
        if any(values[r] != values[first] for r in rest):
            if field == "evaluation.eval_set":  # compared by content, shown by path
                paths = {run: (configs[run].get("evaluation") or {}).get("eval_set") for run in values}
                values = {run: v if v == paths[run] else f"{paths[run]} ({v})" for run, v in values.items()}
            problems.append(f"  - {field}: " + "; ".join(f"{run}: {values[run]}" for run in values))
    if problems:
        raise Incomparable("these runs were evaluated with different settings, so their scores cannot be compared:\n"
                           + "\n".join(problems) + "\nevaluate them with one config: lion compare RUN... --config CONFIG")


def judged_rows(results: Sequence[Mapping[str, Any]], label: str) -> dict[str, dict[str, Any]]:
    """One checkpoint's judged questions from an evaluation's `results` table, keyed by question id."""
    return {r["question_id"]: {new: r[old] for old, new in _COLUMNS.items()} for r in results if r["checkpoint"] == label}


def paired_difference(a: Mapping[str, dict[str, Any]], b: Mapping[str, dict[str, Any]],
                      resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0, level: float = 0.95) -> dict[str, Any]:
    """Relative score of `a` minus that of `b` on the questions both were judged on, and its percentile
    bootstrap interval: the questions resampled with replacement, both scores recomputed on the same
    sample (paired, so a hard question counts against both)."""
    common = sorted(set(a) & set(b))
    if not common:
        return {"questions": 0, "difference": None, "ci95": None}
    ra, rb = [], []
    for q in common:  # an order counts for a question only where both runs were judged in it
        x, y = dict(a[q]), dict(b[q])
        for cols in (("t_score_t_first", "s_score_t_first"), ("t_score_s_first", "s_score_s_first")):
            if any(r.get(c) is None for r in (x, y) for c in cols):
                for r in (x, y):
                    r.update(dict.fromkeys(cols))
        ra.append(x)
        rb.append(y)
    sa, sb = relative_score_of(ra), relative_score_of(rb)
    diff = None if sa is None or sb is None else sa - sb
    rng = random.Random(seed)
    stats = []
    for _ in range(resamples):
        idx = [rng.randrange(len(common)) for _ in common]
        x, y = relative_score_of([ra[i] for i in idx]), relative_score_of([rb[i] for i in idx])
        if x is not None and y is not None:
            stats.append(x - y)
    stats.sort()
    lo, hi = (1 - level) / 2, 1 - (1 - level) / 2
    ci = [stats[round(lo * (len(stats) - 1))], stats[round(hi * (len(stats) - 1))]] if stats else None
    return {"questions": len(common), "difference": diff, "ci95": ci}


def compare_pairs(rows: Mapping[str, Mapping[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Every pair of runs (in the order given), A - B."""
    return [{"a": a, "b": b, **paired_difference(rows[a], rows[b])} for a, b in combinations(rows, 2)]


def api_requests(summaries: Sequence[Any], final: Mapping[str, Any] | None = None) -> dict[str, int]:
    """What a run asked of each API role over its iterations and its final imitation (`final`: its
    `final.json`; the one-shot baseline's holds its generation rounds too), answered by a call or from the
    store: what it would have paid for on its own, whatever another run sharing its store paid first."""
    out: dict[str, int] = {}
    rows = [u for s in summaries for u in s.usage_by_role]
    rows += [UsageRow(**u) for u in (final or {}).get("usage", [])]
    for u in rows:
        out[u.role] = out.get(u.role, 0) + u.requests
    return out


def training_seconds(checkpoints_root: str) -> float:
    """The fine-tunes' run time of a run: every iteration's (and the final Train Pool's) training record."""
    import json
    from pathlib import Path

    total = 0.0
    for info in Path(checkpoints_root).glob("iter-*/final/lion_checkpoint.json"):
        total += float(json.loads(info.read_text()).get("train_runtime_s") or 0.0)
    return total


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:+.1%}" if x < 0 or x > 0 else "0.0%"


def compare_markdown(runs: Sequence[Mapping[str, Any]], pairs: Sequence[Mapping[str, Any]]) -> str:
    """The runs with their scores and costs, then the paired differences."""
    lines = ["| run | selection | relative score | 95% interval | API requests | paid calls | cost paid (USD) "
             "| training (s) |", "|---|---|---|---|---|---|---|---|"]
    for r in runs:
        ci = r.get("relative_score_ci95")
        ci_text = f"{ci[0]:.1%} to {ci[1]:.1%}" if ci else "n/a"
        score = "n/a" if r.get("relative_score") is None else f"{r['relative_score']:.1%}"
        lines.append(f"| {r['run']} | {r.get('selection', '')} | {score} | {ci_text} | {r.get('api_requests', 0)} | "
                     f"{r.get('paid_calls', 0)} | {r.get('cost_usd', 0.0):.4f} | {r.get('training_s', 0.0):.0f} |")
    lines += ["", "| A - B | questions | difference | 95% interval |", "|---|---|---|---|"]
    for p in pairs:
        ci = p["ci95"]
        ci_text = f"{_pct(ci[0])} to {_pct(ci[1])}" if ci else "n/a"
        lines.append(f"| {p['a']} - {p['b']} | {p['questions']} | {_pct(p['difference'])} | {ci_text} |")
    return "\n".join(lines)
