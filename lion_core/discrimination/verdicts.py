"""The referee's reply read as a verdict, and the answers quoted so they cannot forge the prompt.


A total parser: every reply gives Scores or Unparsed with its reason, and the raw text is kept by the
caller. Scores lie in 0..10; 0 is a verdict (an empty or harmful answer earns it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NamedTuple

STYLES = ("lion", "vicuna")
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


