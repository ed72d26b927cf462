"""The generator's side of one candidate: its request (prompt, reply budget, draw identity) and the
total parser of its reply, with the reasons a reply is unusable; the candidates' row type."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from lion_core.config import GeneratorConfig
from lion_core.llm.requests import ChatRequest
from lion_core.prompts import question_text, render
from lion_core.rows import arrow_schema

CANDIDATES_SCHEMA_VERSION = "candidates/2"


@dataclass(slots=True)
class CandidateRow:
    """One candidate asked for, with its outcome: `accepted`, or `rejected` with a reason (request_failed,
    truncated, unparseable, empty, too_short, too_long, leaked_markers, refusal, duplicate, rouge_l).
    Filled in as the candidate goes through the round, hence not frozen."""

    round: int | None
    origin: str | None
    seed_id: str | None
    seed_instruction: str | None
    seed_has_input: bool | None
    max_tokens: int | None
    cached: bool | None
    raw: str | None
    finish_reason: str | None
    instruction: str | None
    input: str | None
    status: str | None
    reason: str | None
    max_rouge_l: float | None
    most_similar: str | None


CANDIDATES_SCHEMA = arrow_schema(CandidateRow)

_TASK = re.compile(r"^\W*new\s+task\W*?:[\s*_]*", re.IGNORECASE)
_INPUT = re.compile(r"^\W*new\s+input\W*?:[\s*_]*", re.IGNORECASE)
_NO_INPUT = {"", "none", "n/a", "na", "no input", "<noinput>", "noinput", "null", "-", "(none)"}
_MARKERS = re.compile(r"<<<|>>>|example task|new task\s*:|new input\s*:|###\s*(instruction|input|response)",
                      re.IGNORECASE)
_REFUSAL = re.compile(
    r"^\W*(i'?m sorry|i am sorry|sorry[,.!]|as an ai\b|i cannot\b|i can'?t\b|i am unable|i'?m unable|i won'?t\b)",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Parsed:
    instruction: str
    input: str


@dataclass(frozen=True)
class Rejected:
    reason: str


def parse_candidate(text: str | None, finish_reason: str | None, cfg: GeneratorConfig) -> Parsed | Rejected:
    """A total parser of the generator's reply: a new (instruction, input) or the reason it is unusable."""
    if finish_reason == "length":
        return Rejected("truncated")  # the official code drops these too: the task may be cut off
    if not isinstance(text, str) or not text.strip():
        return Rejected("empty")
    lines = text.strip().splitlines()
    start = next((i for i, ln in enumerate(lines) if _TASK.match(ln)), None)
    if start is None:
        return Rejected("refusal" if _REFUSAL.match(text) else "unparseable")
    stop = next((i for i in range(start + 1, len(lines)) if _INPUT.match(lines[i])), len(lines))
    instruction = "\n".join([_TASK.sub("", lines[start], count=1), *lines[start + 1:stop]]).strip()
    input_text = ""
    if stop < len(lines):
        input_text = "\n".join([_INPUT.sub("", lines[stop], count=1), *lines[stop + 1:]]).strip()
        if input_text.strip().strip('"').lower() in _NO_INPUT:
            input_text = ""
    if not instruction:
        return Rejected("empty")
    if _REFUSAL.match(instruction):
        return Rejected("refusal")
    if _MARKERS.search(instruction) or _MARKERS.search(input_text):
        return Rejected("leaked_markers")
    words = len(instruction.split())
    if words < cfg.min_instruction_words:
        return Rejected("too_short")
    if words > cfg.max_instruction_words:
        return Rejected("too_long")
    return Parsed(instruction, input_text)


def generator_max_tokens(seed: dict[str, Any], cfg: GeneratorConfig) -> int:
    """The reply budget for one seed: proportional to the whole rendered seed (instruction and input),
    since a new task is about as long as its example, within the configured floor and ceiling."""
    if cfg.sampling.max_tokens:
        return cfg.sampling.max_tokens
    words = len(question_text(seed["instruction"], seed.get("input") or "").split())
    return min(max(cfg.max_tokens_per_seed_word * words, cfg.max_tokens_floor), cfg.max_tokens_ceiling)


def draw_scope(iteration: int) -> str:
    """The identity of a generation draw includes the iteration that asks for it: iteration k's draws
    are fresh even where iteration j drew the same seed with the same prompt."""
    return f"generation of iteration {iteration}"


def generator_request(seed: dict[str, Any], origin: str, cfg: GeneratorConfig, sample_index: int,
                      iteration: int) -> ChatRequest:
    prompt = render(f"generator_{origin}", seed=question_text(seed["instruction"], seed.get("input") or ""))
    return ChatRequest.of([("user", prompt)], temperature=cfg.sampling.temperature, top_p=cfg.sampling.top_p,
                          max_tokens=generator_max_tokens(seed, cfg), sample_index=sample_index,
                          draw_scope=draw_scope(iteration), tag=seed["id"])


def split_quota(n: int, ratio: tuple[float, float], n_hard_seeds: int, n_easy_seeds: int) -> tuple[int, int]:
    """How many new instructions come from hard and from easy seeds; a side with no seeds gives its share away."""
    if n_hard_seeds == 0 and n_easy_seeds == 0:
        return 0, 0
    if n_hard_seeds == 0:
        return 0, n
    if n_easy_seeds == 0:
        return n, 0
    hard = round(n * ratio[0] / (ratio[0] + ratio[1]))
    return hard, n - hard


