"""The referee's verdicts: each (teacher, student) pair judged in both orders; hard or easy.

The referee sees each pair twice, teacher first and student first, to cancel position bias. An item's
teacher score is the mean of its two teacher scores, likewise the student's; d = mean_T - mean_S and
the item is hard when d >= tau. A judgment that cannot be parsed is asked again (a new sample) up to
`max_reasks` times; an item with an order still unresolved is left out of hard and easy and counted
with its reason, never given a score. An item the student answered with nothing at all is hard
without asking anyone: there is no answer to compare, and it is the item the student most needs.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace

from lion_core.discrimination.verdicts import Unparsed, parse_judgment, quote_material
from lion_core.llm.gateway import ChatGateway
from lion_core.llm.requests import ChatRequest
from lion_core.prompts import question_text, render
from lion_core.results import DiscriminationReport
from lion_core.rows import arrow_schema

JUDGMENTS_SCHEMA_VERSION = "judgments/2"
REQUEST_FAILED = "[request failed"
"""How a raw judgment starts when the request itself failed (no reply to parse)."""
EMPTY_STUDENT_ANSWER = "empty_student_answer"
"""The reason recorded for an item judged hard because the student produced no text."""


@dataclass(frozen=True, slots=True)
class JudgmentRow:
    """One item's verdicts: both orders' scores in (teacher, student) terms, their means, d, the label
    (hard, easy, unresolved; `missing_answer` for an item without an answer to judge), why an item is
    unresolved or hard without a verdict, and the referee's raw replies."""

    id: str | None
    instruction: str | None
    input: str | None
    t_score_t_first: float | None
    s_score_t_first: float | None
    t_score_s_first: float | None
    s_score_s_first: float | None
    mean_t: float | None
    mean_s: float | None
    d: float | None
    label: str | None
    reason: str | None
    raw_t_first: str | None
    raw_s_first: str | None
    asks: int | None

    @classmethod
    def unjudged(cls, item_id: str, instruction: str, input: str, label: str, reason: str | None) -> JudgmentRow:
        """An item labelled without asking the referee (an empty student answer; a missing answer)."""
        return cls(id=item_id, instruction=instruction, input=input, t_score_t_first=None, s_score_t_first=None,
                   t_score_s_first=None, s_score_s_first=None, mean_t=None, mean_s=None, d=None, label=label,
                   reason=reason, raw_t_first="", raw_s_first="", asks=0)


JUDGMENTS_SCHEMA = arrow_schema(JudgmentRow)


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


def discriminate(gateway: ChatGateway, items: Sequence[JudgeItem], *, style: str, tau: float, max_reasks: int,
                 stage: str = "discrimination") -> list[JudgmentRow]:
    """One row per item, in order."""
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
    return [_row(item, tau, None if i in empty else (state[(i, True)], state[(i, False)])) for i, item in enumerate(items)]


def _row(item: JudgeItem, tau: float, orders: tuple | None) -> JudgmentRow:
    if orders is None:
        return JudgmentRow.unjudged(item.id, item.instruction, item.input, "hard", EMPTY_STUDENT_ANSWER)
    first, second = orders
    row = replace(JudgmentRow.unjudged(item.id, item.instruction, item.input, "unresolved", None),
                  raw_t_first=first[1], raw_s_first=second[1], asks=first[2] + second[2])
    if not isinstance(first[0], str):
        row = replace(row, t_score_t_first=first[0][0], s_score_t_first=first[0][1])
    if not isinstance(second[0], str):
        row = replace(row, t_score_s_first=second[0][0], s_score_s_first=second[0][1])
    if isinstance(first[0], str) or isinstance(second[0], str):
        reason = "; ".join(f"{order}: {s[0]}" for order, s in (("teacher_first", first), ("student_first", second))
                           if isinstance(s[0], str))
        return replace(row, label="unresolved", reason=reason)
    mean_t, mean_s = (first[0][0] + second[0][0]) / 2, (first[0][1] + second[0][1]) / 2
    return replace(row, mean_t=mean_t, mean_s=mean_s, d=mean_t - mean_s, label="hard" if mean_t - mean_s >= tau else "easy")


def discrimination_report(rows: Sequence[JudgmentRow], missing_answer: int = 0) -> DiscriminationReport:
    """Coverage per order, order inconsistency, score distributions, the hard fraction, and why items
    stayed unresolved; `missing_answer` items (without an answer to judge) are counted apart."""
    n = len(rows)
    labels = Counter(r.label for r in rows)
    resolved = [r for r in rows if r.label in ("hard", "easy")]
    scored = [r for r in resolved if r.d is not None]
    flips = sum(_verdict(r.t_score_t_first, r.s_score_t_first) != _verdict(r.t_score_s_first, r.s_score_s_first)
                for r in scored)
    reasons: Counter[str] = Counter()
    for r in rows:
        if r.label == "unresolved":
            reasons.update(part.split(": ", 1)[1] for part in (r.reason or "unknown: unknown").split("; "))

    def hist(values: list[float]) -> dict[str, int]:
        return {f"{k:g}": v for k, v in sorted(Counter(values).items())}

    return DiscriminationReport(
        items=n,
        coverage_teacher_first=sum(r.t_score_t_first is not None for r in rows) / n if n else 0.0,
        coverage_student_first=sum(r.t_score_s_first is not None for r in rows) / n if n else 0.0,
        resolved=len(resolved),
        unresolved=labels["unresolved"],
        unresolved_by_reason=dict(sorted(reasons.items())),
        hard=labels["hard"],
        hard_empty_answer=sum(r.reason == EMPTY_STUDENT_ANSWER for r in rows),
        easy=labels["easy"],
        zero_scores=sum(s == 0 for r in scored for s in
                        (r.t_score_t_first, r.s_score_t_first, r.t_score_s_first, r.s_score_s_first)),
        hard_fraction=labels["hard"] / len(resolved) if resolved else 0.0,
        order_inconsistency_rate=flips / len(scored) if scored else 0.0,
        mean_teacher_score=sum(r.mean_t for r in scored) / len(scored) if scored else None,
        mean_student_score=sum(r.mean_s for r in scored) / len(scored) if scored else None,
        teacher_score_histogram=hist([r.mean_t for r in scored]),
        student_score_histogram=hist([r.mean_s for r in scored]),
        gap_histogram=hist([r.d for r in scored]),
        reasks=sum(max((r.asks or 0) - 2, 0) for r in rows),
        missing_answer=missing_answer,
    )
