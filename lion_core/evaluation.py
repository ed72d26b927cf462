"""Evaluation: a judge scores each checkpoint's answers against a reference model's, in both orders.

As in the paper (and Vicuna's GPT-4 evaluation): for every question the judge sees the reference
answer and the student answer twice, reference first and student first, and gives each a score from
1 to 10 with the referee's prompt and parser. Per order, relative score = sum of student scores / sum
of reference scores over the questions judged in that order; the headline is the mean of the two
orders. Per question, the means over both orders decide win, tie or loss. Questions whose verdict
could not be parsed are counted, never scored, and a coverage below the configured minimum fails the
evaluation instead of quietly scoring what is left.
"""

from __future__ import annotations

import io
import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from lion_core.errors import EvaluationIncomplete, SeedError
from lion_core.seeds import Problems, decode_text, parse_json, parse_jsonl, read_source_bytes, text_field

EVAL_FORMATS = (".jsonl", ".ndjson", ".json", ".parquet")
ORDERS = ("reference_first", "student_first")
NO_ANSWER = "(no answer)"
"""What the judge sees when the student produced nothing: an empty answer is the student's real output."""


@dataclass(frozen=True)
class EvalQuestion:
    id: str
    question: str
    category: str
    input: str = ""
    """The question's input (Alpaca's `input`, Self-Instruct's `instances[0].input`); "" when it has none."""


def load_eval_set(source: str) -> list[EvalQuestion]:
    """Questions from JSONL, JSON or Parquet: text in `question`, `text`, `instruction` or `turns[0]`
    (Vicuna-80's question.jsonl and its llm_judge variant both load); id from `question_id` or `id`
    (else the position); optional `category`; optional input from a top-level `input` (Alpaca format)
    or, when there is none, from `instances[0].input` (Self-Instruct format, as in its seed_tasks.jsonl
    and user_oriented_instructions.jsonl: of several instances only the first one's input is used). An
    input that is missing, empty or only whitespace gives "". Every bad record (including a non-string
    input or malformed `instances`) is reported, by position."""
    name = source.split("?", 1)[0].lower()
    if not name.endswith(EVAL_FORMATS):
        raise SeedError(f"{source}: unsupported eval set format; use one of {', '.join(EVAL_FORMATS)}")
    data = read_source_bytes(source)
    if name.endswith(".parquet"):
        try:
            table = pq.read_table(io.BytesIO(data))
        except (pa.ArrowException, OSError) as err:
            raise SeedError(f"{source}: not a readable Parquet file: {err}") from None
        records = [(f"record {i + 1}", r) for i, r in enumerate(table.to_pylist())]
    else:
        text = decode_text(source, data)
        parsed = parse_json(source, text, "") if name.endswith(".json") else parse_jsonl(source, text, "")
        records = [(r.where, r.data) for r in parsed]
    problems = Problems(source)
    out: list[EvalQuestion] = []
    seen: set[str] = set()
    for i, (where, rec) in enumerate(records):
        if not isinstance(rec, dict):
            problems.add(where, f"expected an object, got {type(rec).__name__}")
            continue
        question = next((rec[k] for k in ("question", "text", "instruction") if rec.get(k) is not None), None)
        if question is None and isinstance(rec.get("turns"), (list, tuple)) and rec["turns"]:
            question = rec["turns"][0]
        if not isinstance(question, str) or not question.strip():
            problems.add(where, "no question text (fields: question, text, instruction or turns)")
            continue
        qid = rec.get("question_id", rec.get("id", i + 1))
        qid = str(qid)
        if qid in seen:
            problems.add(where, f"question id {qid!r} repeats an earlier one")
            continue
        seen.add(qid)
        input_text = _eval_input(rec, where, problems)
        if input_text is None:
            continue
        category = rec.get("category")
        out.append(EvalQuestion(qid, question.strip(), str(category) if category else "uncategorized", input_text))
    problems.raise_if_any()
    if not out:
        raise SeedError(f"{source}: no questions found")
    return out


def _eval_input(rec: dict[str, Any], where: str, problems: Problems) -> str | None:
    """A record's input ("" if none); None after reporting a bad one."""
    if rec.get("input") is None and rec.get("instances") is not None:
        instances = rec["instances"]
        if not isinstance(instances, (list, tuple)) or not instances or not isinstance(instances[0], dict):
            problems.add(where, "field 'instances' must be a non-empty list of objects with 'input' and 'output'")
            return None
        value = text_field(instances[0], "input", f"{where} instances[0]", problems, required=False)
    else:
        value = text_field(rec, "input", where, problems, required=False)
    if value is None:
        return None
    return value if value.strip() else ""


def question_rows(questions: Sequence[EvalQuestion]) -> list[dict[str, Any]]:
    """The questions as rows the answer stages take: id, instruction and input."""
    return [{"id": q.id, "instruction": q.question, "input": q.input} for q in questions]


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


BOOTSTRAP_RESAMPLES = 2000


def _order_columns() -> list[tuple[str, str]]:
    return [("t_score_t_first", "s_score_t_first"), ("t_score_s_first", "s_score_s_first")]


def relative_score_of(rows: Sequence[dict[str, Any]]) -> float | None:
    """The headline relative score of judged rows: per order sum of student / sum of reference scores
    over the rows judged in that order, averaged over the two orders."""
    per_order = []
    for ref_col, stu_col in _order_columns():
        judged = [r for r in rows if r.get(ref_col) is not None and r.get(stu_col) is not None]
        per_order.append(_ratio(sum(r[stu_col] for r in judged), sum(r[ref_col] for r in judged)))
    return sum(per_order) / 2 if None not in per_order else None


def bootstrap_interval(rows: Sequence[dict[str, Any]], resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0,
                       level: float = 0.95) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the relative score over questions: resample the questions with
    replacement, recompute the score; a fixed seed makes the interval reproducible."""
    if not rows:
        return None
    rng = random.Random(seed)
    stats = sorted(v for _ in range(resamples)
                   if (v := relative_score_of([rows[rng.randrange(len(rows))] for _ in rows])) is not None)
    if not stats:
        return None
    lo, hi = (1 - level) / 2, 1 - (1 - level) / 2
    return stats[int(lo * (len(stats) - 1))], stats[int(round(hi * (len(stats) - 1)))]


def _scores(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Relative scores, counts and win/tie/loss for a set of judged rows (the discriminate() format)."""
    out: dict[str, Any] = {"questions": len(rows)}
    per_order = {}
    for order, (ref_col, stu_col) in zip(ORDERS, (("t_score_t_first", "s_score_t_first"),
                                                  ("t_score_s_first", "s_score_s_first"))):
        judged = [r for r in rows if r.get(ref_col) is not None and r.get(stu_col) is not None]
        ref_sum, stu_sum = sum(r[ref_col] for r in judged), sum(r[stu_col] for r in judged)
        per_order[order] = _ratio(stu_sum, ref_sum)
        out[f"judged_{order}"] = len(judged)
        out[f"failed_{order}"] = len(rows) - len(judged)
        out[f"coverage_{order}"] = len(judged) / len(rows) if rows else 0.0
        out[f"student_score_sum_{order}"] = stu_sum
        out[f"reference_score_sum_{order}"] = ref_sum
        out[f"relative_score_{order}"] = per_order[order]
    both = [per_order[o] for o in ORDERS]
    out["relative_score"] = sum(both) / 2 if None not in both else None
    ci = bootstrap_interval(rows) if out["relative_score"] is not None else None
    out["relative_score_ci95"] = list(ci) if ci else None
    resolved = [r for r in rows if all(r.get(c) is not None for c in
                                       ("t_score_t_first", "s_score_t_first", "t_score_s_first", "s_score_s_first"))]
    outcome = Counter("win" if r["mean_s"] > r["mean_t"] else "tie" if r["mean_s"] == r["mean_t"] else "loss"
                      for r in resolved)
    out.update(wins=outcome["win"], ties=outcome["tie"], losses=outcome["loss"], resolved_both_orders=len(resolved))
    flips = sum(_better(r["t_score_t_first"], r["s_score_t_first"]) != _better(r["t_score_s_first"], r["s_score_s_first"])
                for r in resolved)
    out["order_inconsistency_rate"] = flips / len(resolved) if resolved else None
    return out


def _better(reference: float, student: float) -> str:
    return "student" if student > reference else "reference" if reference > student else "tie"


def checkpoint_scores(rows: Sequence[dict[str, Any]], categories: dict[str, str], n_questions: int) -> dict[str, Any]:
    """Scores of one checkpoint: overall and per category. `rows` are the judged items (one per
    question with a reference answer); questions without one count as failed in both orders."""
    missing = n_questions - len(rows)
    overall = _scores(rows)
    overall["questions"] = n_questions
    for order in ORDERS:
        overall[f"failed_{order}"] += missing
        overall[f"coverage_{order}"] = overall[f"judged_{order}"] / n_questions if n_questions else 0.0
    overall["missing_reference"] = missing
    by_cat: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_cat.setdefault(categories[r["id"]], []).append(r)
    overall["categories"] = {c: _scores(rs) for c, rs in sorted(by_cat.items())}
    return overall


def check_coverage(name: str, scores: dict[str, Any], min_coverage: float) -> None:
    low = [(o, scores[f"coverage_{o}"]) for o in ORDERS if scores[f"coverage_{o}"] < min_coverage]
    if low:
        detail = ", ".join(f"{o.replace('_', ' ')} {c:.0%} ({scores[f'judged_{o}']} of {scores['questions']})"
                           for o, c in low)
        raise EvaluationIncomplete(f"{name}: judged coverage {detail} is below evaluation.min_coverage "
                                   f"{min_coverage:.0%}; the raw judgments are kept for inspection")


def scores_table(all_scores: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per checkpoint and category (category `all` first), for tables and Parquet."""
    rows = []
    for name, s in all_scores.items():
        for cat, cs in [("all", s), *s["categories"].items()]:
            rows.append({
                "checkpoint": name, "category": cat, "questions": cs["questions"],
                "relative_score": cs["relative_score"],
                "relative_score_ci95_low": (cs.get("relative_score_ci95") or [None, None])[0],
                "relative_score_ci95_high": (cs.get("relative_score_ci95") or [None, None])[1],
                "relative_score_reference_first": cs["relative_score_reference_first"],
                "relative_score_student_first": cs["relative_score_student_first"],
                "wins": cs["wins"], "ties": cs["ties"], "losses": cs["losses"],
                "judged_reference_first": cs["judged_reference_first"], "judged_student_first": cs["judged_student_first"],
                "failed_reference_first": cs["failed_reference_first"], "failed_student_first": cs["failed_student_first"],
                "order_inconsistency_rate": cs["order_inconsistency_rate"],
            })
    return rows


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1%}"


def ci_text(ci: Sequence[float] | None) -> str:
    return "n/a" if not ci else f"{ci[0]:.1%} to {ci[1]:.1%}"


def scores_markdown(title: str, all_scores: dict[str, dict[str, Any]], reference: str, judge: str) -> str:
    lines = [f"# {title}", "", f"Reference: `{reference}`; judge: `{judge}`. Relative score = student score sum / "
             "reference score sum, per order and averaged; the interval is a 95% bootstrap interval over questions.", "",
             "| checkpoint | relative score | 95% interval | reference first | student first | win / tie / loss | "
             "judged (ref first, student first) of | order inconsistency |", "|---|---|---|---|---|---|---|---|"]
    for name, s in all_scores.items():
        lines.append(f"| {name} | **{_pct(s['relative_score'])}** | {ci_text(s.get('relative_score_ci95'))} | "
                     f"{_pct(s['relative_score_reference_first'])} | "
                     f"{_pct(s['relative_score_student_first'])} | {s['wins']} / {s['ties']} / {s['losses']} | "
                     f"{s['judged_reference_first']}, {s['judged_student_first']} of {s['questions']} | "
                     f"{_pct(s['order_inconsistency_rate'])} |")
    cats = sorted({c for s in all_scores.values() for c in s["categories"]})
    if cats:
        lines += ["", "## Relative score per category", "",
                  "| category | " + " | ".join(all_scores) + " |", "|---|" + "---|" * len(all_scores)]
        for c in cats:
            cells = [_pct(s["categories"][c]["relative_score"]) if c in s["categories"] else "-" for s in all_scores.values()]
            lines.append(f"| {c} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _label(text: str) -> str:
    out = "".join(c if c.isalnum() or c in "-_." else "-" for c in text.lower()).strip("-.")
    return out or "checkpoint"


def run_checkpoints(config: Any, run_id: str) -> list[tuple[str, str]]:
    """(label, path) of every checkpoint a run trained, in order, then its final checkpoint. An iteration
    that carried an earlier checkpoint forward adds nothing, and the final one's source is listed only as
    the final one: each model once."""
    from pathlib import Path

    from lion_core.checkpoints import read_final_info
    from lion_core.student.train import COMPLETE, FINAL

    root = Path(config.storage.checkpoint_dir(run_id, 0)).parent
    trained = sorted((int(m.group(1)), p / FINAL) for p in (root.iterdir() if root.is_dir() else ())
                     if (m := re.fullmatch(r"iter-(\d+)", p.name)) and (p / FINAL / COMPLETE).is_file())
    final = config.storage.final_checkpoint_dir(run_id)
    final_info = read_final_info(final)
    # the final checkpoint holds its source's weights: list it once, as the final one
    same = final_info.get("source_iteration") if final_info else None
    out = [(f"{_label(run_id)}-iter-{k}", str(path)) for k, path in trained if k != same]
    if final_info:
        out.append((f"{_label(run_id)}-final", final))
    return out


def run_scores(all_scores: dict[str, dict[str, Any]], run_id: str) -> dict[Any, dict[str, Any]]:
    """The scores of `run:<run id>`'s checkpoints keyed "base", iteration number and "final"."""
    prefix = f"{_label(run_id)}-"
    out: dict[Any, dict[str, Any]] = {}
    for label, s in all_scores.items():
        key: Any = label
        if label.startswith(prefix):
            rest = label[len(prefix):]
            key = int(rest[5:]) if re.fullmatch(r"iter-\d+", rest) else rest
        out[key] = {"relative_score": s["relative_score"], "relative_score_ci95": s.get("relative_score_ci95"),
                    "wins": s["wins"], "ties": s["ties"], "losses": s["losses"]}
    return out


def resolve_checkpoints(config: Any, specs: Sequence[str]) -> list[tuple[str, str]]:
    """(label, model path) per checkpoint to evaluate. A spec is `base` (the config's student model, pruned
    as `student.keep_layers` says),
    `run:<run id>` (the base model and every finished iteration of that run, in order), `final:<run id>` (that
    run's final checkpoint alone, labelled `<run id>-final`), or a folder."""
    from pathlib import Path

    from lion_core.errors import LionError
    from lion_core.student.models import student_base_model
    from lion_core.student.train import FINAL

    out: list[tuple[str, str]] = []
    for spec in specs:
        if spec == "base":
            out.append(("base", student_base_model(config.student)))
        elif spec.startswith("final:"):
            final = [(label, path) for label, path in run_checkpoints(config, spec[6:]) if label.endswith("-final")]
            if not final:
                raise LionError(f"{spec}: run {spec[6:]} has no final checkpoint under "
                                f"{config.storage.final_checkpoint_dir(spec[6:])} (has it finished?)")
            out += final
        elif spec.startswith("run:"):
            run_id = spec[4:]
            out.append(("base", student_base_model(config.student)))
            found = run_checkpoints(config, run_id)
            if not found:
                raise LionError(f"{spec}: no finished checkpoint under {config.storage.checkpoint_dir(run_id, 0)}")
            out += found
        else:
            p = Path(spec).expanduser()
            if not p.is_dir() or not (p / "config.json").is_file():
                raise LionError(f"checkpoint {spec}: not a model folder (no config.json)")
            name = p.parent.name if p.name == FINAL else p.name
            out.append((_label(name), str(p.resolve())))
    seen: dict[str, str] = {}
    unique = []
    for label, path in out:
        if seen.get(label) == path:
            continue  # `base` named twice
        if label in seen:
            raise LionError(f"two checkpoints would both be called {label!r}: {seen[label]} and {path}")
        seen[label] = path
        unique.append((label, path))
    if not unique:
        raise LionError("no checkpoints to evaluate")
    return unique


def question_pool(questions: Sequence[EvalQuestion]) -> list[dict[str, Any]]:
    """The questions as pool rows (origin `eval`) with their input, keeping id and category in the metadata."""
    from lion_core.pools import make_row

    rows, ids = [], set()
    for q in questions:
        row = make_row(q.question, q.input, origin="eval", iteration=0,
                       metadata={"question_id": q.id, "category": q.category})
        if row["id"] in ids:
            raise SeedError(f"question {q.id}: the same text as an earlier question")
        ids.add(row["id"])
        rows.append(row)
    return rows
