"""Discrimination: the referee scores teacher and student answers in both orders; hard or easy.

The referee sees each (teacher, student) pair twice, teacher first and student first, to cancel position
bias. An item's teacher score is the mean of its two teacher scores, likewise the student's;
d = mean_T - mean_S and the item is hard when d >= tau. A judgment that cannot be parsed is asked again
(a new sample) up to `max_reasks` times; an item with an order still unresolved is left out of hard and
easy and counted, never given a score.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lion_core.llm.gateway import Gateway
from lion_core.llm.requests import ChatRequest
from lion_core.prompts import question_text, render

STYLES = ("lion", "vicuna")
REQUEST_FAILED = "[request failed"
"""How a raw judgment starts when the request itself failed (no reply to parse)."""
_N = r"(\d{1,2}(?:\.\d+)?)"
_OUT_OF_10 = r"(?:\s*/\s*10)?"
_LION_LINE = {
    n: re.compile(rf"^[\W_]*score\s+of\s+(?:the\s+)?assistant\s*{n}[\s*_]*[:：][\s*_]*{_N}\**{_OUT_OF_10}[\s.*_]*$",
                  re.IGNORECASE)
    for n in (1, 2)
}
_VICUNA_LINE = re.compile(rf"^[\s*_]*{_N}\**{_OUT_OF_10}\**(?:\s*,\s*|\s+)\**{_N}\**{_OUT_OF_10}[\s.*_]*$")


def _score(text: str) -> float | None:
    v = float(text)
    return v if 1.0 <= v <= 10.0 else None


def parse_judgment(text: str, style: str) -> tuple[float, float] | None:
    """(score of assistant 1, score of assistant 2), or None when the reply is not a clear verdict.

    `lion`: the reply must end with the two score lines (trailing blank lines allowed); anything
    earlier, including quoted answers that contain score lines, is explanation and never read.
    `vicuna`: the first non-empty line holds exactly the two scores. Scores must lie in 1..10.
    """
    if not isinstance(text, str):
        return None
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    if style == "lion":
        if len(lines) < 2:
            return None
        m1, m2 = _LION_LINE[1].match(lines[-2]), _LION_LINE[2].match(lines[-1])
        if not (m1 and m2):
            return None
        s1, s2 = _score(m1.group(1)), _score(m2.group(1))
    elif style == "vicuna":
        if not lines:
            return None
        m = _VICUNA_LINE.match(lines[0])
        if not m:
            return None
        s1, s2 = _score(m.group(1)), _score(m.group(2))
    else:
        raise ValueError(f"unknown referee style {style!r}; use one of {STYLES}")
    if s1 is None or s2 is None:
        return None
    return s1, s2


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
    user = render(f"referee_{style}", question=question_text(item.instruction, item.input), answer_1=a1, answer_2=a2)
    return ChatRequest.of([("system", render("referee_system")), ("user", user)], temperature=temperature,
                          top_p=top_p, max_tokens=max_tokens, sample_index=sample_index, tag=item.id)


def _verdict(t: float, s: float) -> int:
    return (t > s) - (t < s)


def discriminate(gateway: Gateway, items: Sequence[JudgeItem], *, style: str, tau: float, max_reasks: int,
                 stage: str = "discrimination") -> list[dict[str, Any]]:
    """One row per item: both orders' scores and raw replies, means, d, label (hard/easy/unresolved)."""
    cfg = gateway.endpoint.config.sampling
    # orders[i][o] = (parsed scores in (teacher, student) terms or None, raw text or error, asks)
    state: dict[tuple[int, bool], tuple[tuple[float, float] | None, str, int]] = {}
    pending = [(i, tf) for i in range(len(items)) for tf in (True, False)]
    for ask in range(max_reasks + 1):
        if not pending:
            break
        reqs = [judge_request(items[i], tf, style, cfg.temperature, cfg.top_p, cfg.max_tokens, sample_index=ask)
                for i, tf in pending]
        results = gateway.run_sync(reqs, stage)
        still = []
        for (i, tf), res in zip(pending, results):
            parsed = parse_judgment(res.text, style) if res.ok else None
            if parsed is not None:
                a1, a2 = parsed
                state[(i, tf)] = ((a1, a2) if tf else (a2, a1), res.text or "", ask + 1)
            else:
                raw = res.text if res.ok else f"{REQUEST_FAILED}: {res.error_class}: {res.error_message}]"
                state[(i, tf)] = (None, raw or "", ask + 1)
                still.append((i, tf))
        pending = still
    rows = []
    for i, item in enumerate(items):
        first, second = state[(i, True)], state[(i, False)]
        row: dict[str, Any] = {
            "id": item.id, "instruction": item.instruction, "input": item.input,
            "t_score_t_first": None, "s_score_t_first": None, "t_score_s_first": None, "s_score_s_first": None,
            "mean_t": None, "mean_s": None, "d": None,
            "raw_t_first": first[1], "raw_s_first": second[1], "asks": first[2] + second[2],
        }
        if first[0] is not None:
            row["t_score_t_first"], row["s_score_t_first"] = first[0]
        if second[0] is not None:
            row["t_score_s_first"], row["s_score_s_first"] = second[0]
        if first[0] is None or second[0] is None:
            row["label"] = "unresolved"
        else:
            row["mean_t"] = (first[0][0] + second[0][0]) / 2
            row["mean_s"] = (first[0][1] + second[0][1]) / 2
            row["d"] = row["mean_t"] - row["mean_s"]
            row["label"] = "hard" if row["d"] >= tau else "easy"
        rows.append(row)
    return rows


def discrimination_report(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Coverage per order, order inconsistency, score distributions and the hard fraction."""
    n = len(rows)
    labels = Counter(r["label"] for r in rows)
    resolved = [r for r in rows if r["label"] != "unresolved"]
    flips = sum(
        _verdict(r["t_score_t_first"], r["s_score_t_first"]) != _verdict(r["t_score_s_first"], r["s_score_s_first"])
        for r in resolved
    )

    def hist(values: list[float]) -> dict[str, int]:
        return {f"{k:g}": v for k, v in sorted(Counter(values).items())}

    return {
        "items": n,
        "coverage_teacher_first": sum(r["t_score_t_first"] is not None for r in rows) / n if n else 0.0,
        "coverage_student_first": sum(r["t_score_s_first"] is not None for r in rows) / n if n else 0.0,
        "resolved": len(resolved),
        "unresolved": labels["unresolved"],
        "hard": labels["hard"],
        "easy": labels["easy"],
        "hard_fraction": labels["hard"] / len(resolved) if resolved else 0.0,
        "order_inconsistency_rate": flips / len(resolved) if resolved else 0.0,
        "mean_teacher_score": sum(r["mean_t"] for r in resolved) / len(resolved) if resolved else None,
        "mean_student_score": sum(r["mean_s"] for r in resolved) / len(resolved) if resolved else None,
        "teacher_score_histogram": hist([r["mean_t"] for r in resolved]),
        "student_score_histogram": hist([r["mean_s"] for r in resolved]),
        "gap_histogram": hist([r["d"] for r in resolved]),
        "reasks": sum(r["asks"] - 2 for r in rows),
    }
