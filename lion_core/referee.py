"""Discrimination: the referee scores teacher and student answers in both orders; hard or easy.

The referee sees each (teacher, student) pair twice, teacher first and student first, to cancel position
bias. An item's teacher score is the mean of its two teacher scores, likewise the student's;
d = mean_T - mean_S and the item is hard when d >= tau. A judgment that cannot be parsed is asked again
(a new sample) up to `max_reasks` times; an item with an order still unresolved is left out of hard and
easy and counted with its reason, never given a score. An item the student answered with nothing at all
is hard without asking anyone: there is no answer to compare, and it is the item the student most needs.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from lion_core.llm.gateway import Gateway
from lion_core.llm.requests import ChatRequest
from lion_core.prompts import question_text, render

STYLES = ("lion", "vicuna")
REQUEST_FAILED = "[request failed"
"""How a raw judgment starts when the request itself failed (no reply to parse)."""
EMPTY_STUDENT_ANSWER = "empty_student_answer"
"""The reason recorded for an item judged hard because the student produced no text."""
MIN_SCORE, MAX_SCORE = 0.0, 10.0

# One score: a number, optionally "/10" or "out of 10", optionally in markdown emphasis.
_SCORE = r"[*_]*(-?\d+(?:\.\d+)?)[*_]*(?:\s*(?:/|out\s+of)\s*(\d+(?:\.\d+)?))?[*_]*"
_LION_PREFIX = {n: re.compile(rf"^[\W_]*score\s+of\s+(?:the\s+)?assistant\s*{n}[\s*_]*[:：](.*)$", re.IGNORECASE)
                for n in (1, 2)}
_ANY_LION_LINE = re.compile(r"^[\W_]*score\s+of\s+(?:the\s+)?assistant\s*\d", re.IGNORECASE)
_ONE_SCORE = re.compile(rf"^[\s*_]*{_SCORE}[\s.*_]*$", re.IGNORECASE)
_TWO_SCORES = re.compile(rf"^[\s*_]*{_SCORE}(?:\s*[,;]\s*|\s+){_SCORE}[\s.*_]*$", re.IGNORECASE)
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


class Scores(NamedTuple):
    """A verdict: the scores of the answer shown first and of the answer shown second."""

    first: float
    second: float


@dataclass(frozen=True)
class Unparsed:
    """A reply that is not a clear verdict, and why: empty, no_scores, scores_not_at_end, ambiguous,
    out_of_range or other_scale. The raw text is kept by the caller with it."""

    reason: str


def _value(number: str, scale: str | None) -> float | Unparsed:
    if scale is not None and float(scale) != MAX_SCORE:
        return Unparsed("other_scale")
    v = float(number)
    return v if MIN_SCORE <= v <= MAX_SCORE else Unparsed("out_of_range")


def _score_expression(text: str) -> float | Unparsed:
    m = _ONE_SCORE.match(text)
    if m:
        return _value(m.group(1), m.group(2))
    # "7 or 8", "7-8", "between 7 and 8": a score line, but no single verdict
    return Unparsed("ambiguous" if len(_NUMBER.findall(text)) > 1 else "no_scores")


def _pair(a: float | Unparsed, b: float | Unparsed) -> Scores | Unparsed:
    for v in (a, b):
        if isinstance(v, Unparsed):
            return v
    return Scores(float(a), float(b))  # type: ignore[arg-type]


def parse_judgment(text: str | None, style: str) -> Scores | Unparsed:
    """The verdict in a referee's reply, or why there is none. A total function: it never raises on text.

    `lion`: the reply must end with the two score lines (trailing blank lines allowed); anything
    earlier, including quoted answers that contain score lines, is explanation and never read.
    `vicuna`: the first non-empty line holds exactly the two scores. Scores lie in 0..10 and may be
    written `8`, `8.5`, `8/10` or `8 out of 10`; 0 is a verdict (an empty or harmful answer earns it).
    """
    if style not in STYLES:
        raise ValueError(f"unknown referee style {style!r}; use one of {STYLES}")
    if not isinstance(text, str) or not text.strip():
        return Unparsed("empty")
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    if style == "lion":
        m1 = _LION_PREFIX[1].match(lines[-2]) if len(lines) >= 2 else None
        m2 = _LION_PREFIX[2].match(lines[-1])
        if not (m1 and m2):
            return Unparsed("scores_not_at_end" if any(_ANY_LION_LINE.match(ln) for ln in lines) else "no_scores")
        return _pair(_score_expression(m1.group(1)), _score_expression(m2.group(1)))
    m = _TWO_SCORES.match(lines[0])
    if not m:
        return Unparsed("ambiguous" if len(_NUMBER.findall(lines[0])) > 2 else "no_scores")
    return _pair(_value(m.group(1), m.group(2)), _value(m.group(3), m.group(4)))


# Text that could pass for the prompt's own structure when it appears inside an answer: our markers
# (<<<...>>>), the official Lion/Vicuna markers ([The End of Assistant 1's Answer]) and score lines.
_RUN_OPEN, _RUN_CLOSE = re.compile(r"(?<=<<)<"), re.compile(r"(?<=>>)>")
_STRUCTURE_LINE = re.compile(r"^(\s*[*_#>]*\s*)(\[\s*the\s+(?:start|end)\s+of\b|score\s+of\s+(?:the\s+)?assistant\b)",
                             re.IGNORECASE | re.MULTILINE)


def quote_material(text: str) -> str:
    """Text to be judged, made unable to forge the prompt's layout: no run of three angle brackets
    survives (`<<<` becomes `<<\\<`), and lines that read like a marker or a score line get a leading
    backslash. Everything else is left as written, so the referee judges what the model said."""
    text = _RUN_CLOSE.sub(r"\\>", _RUN_OPEN.sub(r"\\<", text))
    return _STRUCTURE_LINE.sub(lambda m: f"{m.group(1)}\\{m.group(2)}", text)


_UNQUOTE_RUN = re.compile(r"<<(?:\\<)+|>>(?:\\>)+")
_UNQUOTE_LINE = re.compile(r"^(\s*[*_#>]*\s*)\\(\[\s*the\s+(?:start|end)\s+of\b|score\s+of\s+(?:the\s+)?assistant\b)",
                           re.IGNORECASE | re.MULTILINE)


def unquote_material(text: str) -> str:
    """The text `quote_material` was given (for a reader of the prompt: the offline stand-in referee)."""
    text = _UNQUOTE_LINE.sub(lambda m: f"{m.group(1)}{m.group(2)}", text)
    return _UNQUOTE_RUN.sub(lambda m: m.group(0).replace("\\", ""), text)


@dataclass(frozen=True)
class JudgeItem:
    id: str
    instruction: str
    input: str
    teacher_answer: str
    student_answer: str


def judge_request(item: JudgeItem, teacher_first: bool, style: str, temperature: float, top_p: float,
                  max_tokens: int | None, sample_index: int = 0) -> ChatRequest:
    a1, a2 = (item.teacher_answer, item.student_answer) if teacher_first else (item.student_answer, item.teacher_answer)
    user = render(f"referee_{style}", question=quote_material(question_text(item.instruction, item.input)),
                  answer_1=quote_material(a1), answer_2=quote_material(a2))
    return ChatRequest.of([("system", render("referee_system")), ("user", user)], temperature=temperature,
                          top_p=top_p, max_tokens=max_tokens, sample_index=sample_index, tag=item.id)


def _verdict(t: float, s: float) -> int:
    return (t > s) - (t < s)


def _empty_answer_row(item: JudgeItem) -> dict[str, Any]:
    return {"id": item.id, "instruction": item.instruction, "input": item.input,
            "t_score_t_first": None, "s_score_t_first": None, "t_score_s_first": None, "s_score_s_first": None,
            "mean_t": None, "mean_s": None, "d": None, "label": "hard", "reason": EMPTY_STUDENT_ANSWER,
            "raw_t_first": "", "raw_s_first": "", "asks": 0}


def discriminate(gateway: Gateway, items: Sequence[JudgeItem], *, style: str, tau: float, max_reasks: int,
                 stage: str = "discrimination") -> list[dict[str, Any]]:
    """One row per item: both orders' scores and raw replies, means, d, label (hard/easy/unresolved) and,
    for an unresolved item or one that is hard without a verdict, the reason."""
    cfg = gateway.endpoint.config.sampling
    empty = {i for i, item in enumerate(items) if not item.student_answer.strip()}
    # state[(i, teacher_first)] = (scores in (teacher, student) terms or the failure reason, raw text, asks)
    state: dict[tuple[int, bool], tuple[tuple[float, float] | str, str, int]] = {}
    pending = [(i, tf) for i in range(len(items)) if i not in empty for tf in (True, False)]
    for ask in range(max_reasks + 1):
        if not pending:
            break
        reqs = [judge_request(items[i], tf, style, cfg.temperature, cfg.top_p, cfg.max_tokens, sample_index=ask)
                for i, tf in pending]
        results = gateway.run_sync(reqs, stage)
        still = []
        for (i, tf), res in zip(pending, results):
            if not res.ok:
                state[(i, tf)] = ("request_failed", f"{REQUEST_FAILED}: {res.error_class}: {res.error_message}]", ask + 1)
                still.append((i, tf))
                continue
            parsed = parse_judgment(res.text, style)
            if isinstance(parsed, Unparsed):
                state[(i, tf)] = (parsed.reason, res.text or "", ask + 1)
                still.append((i, tf))
            else:
                a1, a2 = parsed
                state[(i, tf)] = ((a1, a2) if tf else (a2, a1), res.text or "", ask + 1)
        pending = still
    rows = []
    for i, item in enumerate(items):
        if i in empty:
            rows.append(_empty_answer_row(item))
            continue
        first, second = state[(i, True)], state[(i, False)]
        row: dict[str, Any] = {
            "id": item.id, "instruction": item.instruction, "input": item.input,
            "t_score_t_first": None, "s_score_t_first": None, "t_score_s_first": None, "s_score_s_first": None,
            "mean_t": None, "mean_s": None, "d": None, "reason": None,
            "raw_t_first": first[1], "raw_s_first": second[1], "asks": first[2] + second[2],
        }
        if not isinstance(first[0], str):
            row["t_score_t_first"], row["s_score_t_first"] = first[0]
        if not isinstance(second[0], str):
            row["t_score_s_first"], row["s_score_s_first"] = second[0]
        if isinstance(first[0], str) or isinstance(second[0], str):
            row["label"] = "unresolved"
            row["reason"] = "; ".join(f"{order}: {s[0]}" for order, s in (("teacher_first", first), ("student_first", second))
                                      if isinstance(s[0], str))
        else:
            row["mean_t"] = (first[0][0] + second[0][0]) / 2
            row["mean_s"] = (first[0][1] + second[0][1]) / 2
            row["d"] = row["mean_t"] - row["mean_s"]
            row["label"] = "hard" if row["d"] >= tau else "easy"
        rows.append(row)
    return rows


def discrimination_report(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Coverage per order, order inconsistency, score distributions, the hard fraction, and why items
    stayed unresolved."""
    n = len(rows)
    labels = Counter(r["label"] for r in rows)
    resolved = [r for r in rows if r["label"] in ("hard", "easy")]
    scored = [r for r in resolved if r.get("d") is not None]
    flips = sum(
        _verdict(r["t_score_t_first"], r["s_score_t_first"]) != _verdict(r["t_score_s_first"], r["s_score_s_first"])
        for r in scored
    )
    reasons: Counter[str] = Counter()
    for r in rows:
        if r["label"] == "unresolved":
            reasons.update(part.split(": ", 1)[1] for part in (r.get("reason") or "unknown: unknown").split("; "))

    def hist(values: list[float]) -> dict[str, int]:
        return {f"{k:g}": v for k, v in sorted(Counter(values).items())}

    return {
        "items": n,
        "coverage_teacher_first": sum(r["t_score_t_first"] is not None for r in rows) / n if n else 0.0,
        "coverage_student_first": sum(r["t_score_s_first"] is not None for r in rows) / n if n else 0.0,
        "resolved": len(resolved),
        "unresolved": labels["unresolved"],
        "unresolved_by_reason": dict(sorted(reasons.items())),
        "hard": labels["hard"],
        "hard_empty_answer": sum(r.get("reason") == EMPTY_STUDENT_ANSWER for r in rows),
        "easy": labels["easy"],
        "zero_scores": sum(r[c] == 0 for r in scored for c in
                           ("t_score_t_first", "s_score_t_first", "t_score_s_first", "s_score_s_first")),
        "hard_fraction": labels["hard"] / len(resolved) if resolved else 0.0,
        "order_inconsistency_rate": flips / len(scored) if scored else 0.0,
        "mean_teacher_score": sum(r["mean_t"] for r in scored) / len(scored) if scored else None,
        "mean_student_score": sum(r["mean_s"] for r in scored) / len(scored) if scored else None,
        "teacher_score_histogram": hist([r["mean_t"] for r in scored]),
        "student_score_histogram": hist([r["mean_s"] for r in scored]),
        "gap_histogram": hist([r["d"] for r in scored]),
        "reasks": sum(max(r["asks"] - 2, 0) for r in rows),
    }
