"""A labelled check of a referee: does it prefer the teacher's answer to a clearly worse one?

For each instruction the teacher's answer is paired with three worse answers to the same instruction:
another instruction's teacher answer (off topic), the answer's own words shuffled (word salad), and its
first words repeated (degenerate repetition, which a raw likelihood would reward). Each pair is judged
in both orders through the normal discrimination path; the figure is the share of verdicts (per pair
and order) that score the teacher's answer higher, against 50% for a referee that guesses.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from lion_core.discrimination.judging import JudgeItem, JudgmentRow

KINDS = ("off_topic", "shuffled", "repetitive")


def worse_answers(answers: Sequence[str], seed: int = 0) -> dict[str, list[str]]:
    """Per kind, one clearly worse answer for each answer (same positions)."""
    rng = random.Random(seed)
    n = len(answers)
    shuffled = []
    for a in answers:
        words = a.split()
        rng.shuffle(words)
        shuffled.append(" ".join(words))
    return {
        "off_topic": [answers[(i + 1) % n] for i in range(n)],
        "shuffled": shuffled,
        "repetitive": [" ".join([" ".join(a.split()[:3])] * 12) for a in answers],
    }


def labelled_items(rows: Sequence[dict[str, Any]], seed: int = 0) -> list[tuple[str, JudgeItem]]:
    """(kind, item) for rows with `id`, `instruction`, `input` and the teacher's `answer`; the worse
    answer stands in the item's student place."""
    worse = worse_answers([r["answer"] for r in rows], seed)
    return [(kind, JudgeItem(id=f"{r['id']}:{kind}", instruction=r["instruction"], input=r.get("input") or "",
                             teacher_answer=r["answer"], student_answer=worse[kind][i]))
            for kind in KINDS for i, r in enumerate(rows)]


def check_figures(kinds: Sequence[str], judged: Sequence[JudgmentRow]) -> dict[str, Any]:
    """Resolved share and preference for the teacher's answer, overall and per kind, from discriminate() rows."""
    def figures(rows: list[JudgmentRow]) -> dict[str, Any]:
        orders = [(r.t_score_t_first, r.s_score_t_first) for r in rows] + [(r.t_score_s_first, r.s_score_s_first) for r in rows]
        verdicts = [(t, s) for t, s in orders if t is not None and s is not None]
        total = 2 * len(rows)
        better = sum(t > s for t, s in verdicts)
        return {"verdicts": total, "resolved": len(verdicts), "resolved_fraction": len(verdicts) / total if total else 0.0,
                "prefers_teacher": better, "prefers_teacher_fraction": better / total if total else 0.0}
    out = figures(list(judged))
    out["by_kind"] = {k: figures([r for kind, r in zip(kinds, judged) if kind == k]) for k in KINDS}
    out["chance"] = 0.5
    return out
