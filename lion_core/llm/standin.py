"""Offline stand-ins for the referee and the generator, built on the embedded teacher model.

A 135M chat model cannot follow the referee's or the generator's instructions (measured: it echoes the
prompt's markers instead of scoring, and writes no usable task in the generator's answer format). So
the offline default puts two stand-ins behind the same OpenAI-compatible loopback endpoint, the same
prompts and the same parsers a real referee and generator go through:

- **Likelihood referee.** It reads the question and the two answers out of the referee prompt and
  scores each answer 0-10 from the teacher model's mean log-likelihood per token of that answer to
  that question, scaled down by the share of repeated word 4-grams (raw likelihood rewards
  repetition). So it measures how close an answer is to what the teacher would write, not its quality;
  it cannot see position, so both orders agree. The review names itself as this stand-in.
- **List generator.** It reads the example task out of the generator prompt and has the teacher model
  continue a numbered list of tasks that starts with it (plain completion, which a small model does
  well where it fails at the chat instruction), then writes the new line in the generator's format.

Everything here is pure: the model and tokenizer are passed in (see `standin_server` for the server).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from lion_core.config import STANDIN_GENERATOR as GENERATOR_MODEL
from lion_core.config import STANDIN_REFEREE as REFEREE_MODEL
from lion_core.discrimination.verdicts import unquote_material
from lion_core.prompts import render

MODELS = (REFEREE_MODEL, GENERATOR_MODEL)

# Mean log-likelihood per token mapped linearly onto 0-10: the teacher's own sampled answers sit near
# -1 (about 9), degenerate text below -6 (0). Measured with SmolLM2-135M-Instruct as the stand-in: re-measure
# both ends if the stand-in model changes, since the span of per-token log-likelihoods is the model's own.
LL_FLOOR, LL_CEIL = -6.0, -0.5
NGRAM = 4
MAX_TASK_TOKENS = 48

_SECTION = re.compile(r"<<<(QUESTION|ANSWER OF ASSISTANT 1|ANSWER OF ASSISTANT 2|EXAMPLE TASK)>>>\n(.*?)\n<<<END \1>>>",
                      re.DOTALL)
_LION_ENDING = "Score of the Assistant 1:"


@dataclass(frozen=True)
class RefereePrompt:
    question: str
    answer_1: str
    answer_2: str
    style: str
    """`lion` (scores on the last two lines) or `vicuna` (both scores on the first line)."""


@dataclass(frozen=True)
class GeneratorPrompt:
    example: str
    rarer: bool
    """The easy-seed prompt: a rarer topic of the same domain."""


def _sections(text: str) -> dict[str, str]:
    return {m.group(1): unquote_material(m.group(2)) for m in _SECTION.finditer(text)}


def parse_referee_prompt(text: str) -> RefereePrompt | None:
    s = _sections(text)
    if not {"QUESTION", "ANSWER OF ASSISTANT 1", "ANSWER OF ASSISTANT 2"} <= s.keys():
        return None
    style = "lion" if _LION_ENDING in text.rsplit("<<<END ANSWER OF ASSISTANT 2>>>", 1)[-1] else "vicuna"
    return RefereePrompt(s["QUESTION"], s["ANSWER OF ASSISTANT 1"], s["ANSWER OF ASSISTANT 2"], style)


def parse_generator_prompt(text: str) -> GeneratorPrompt | None:
    s = _sections(text)
    if "EXAMPLE TASK" not in s:
        return None
    return GeneratorPrompt(s["EXAMPLE TASK"], rarer="rarer" in text.rsplit("<<<END EXAMPLE TASK>>>", 1)[-1])


def repeated_fraction(text: str, n: int = NGRAM) -> float:
    """The share of word n-grams that repeat an earlier one (0 for text too short to have n-grams)."""
    words = text.lower().split()
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    return 1 - len(set(grams)) / len(grams) if grams else 0.0


def likelihood_score(mean_logprob: float | None, repeated: float) -> float:
    """0-10, one decimal: the mean log-likelihood placed between LL_FLOOR and LL_CEIL, times the share of
    unrepeated 4-grams. None (no answer tokens) scores 0."""
    if mean_logprob is None or math.isnan(mean_logprob):
        return 0.0
    scaled = min(1.0, max(0.0, (mean_logprob - LL_FLOOR) / (LL_CEIL - LL_FLOOR)))
    return round(10 * scaled * (1 - repeated), 1)


def answer_mean_logprob(model: Any, tokenizer: Any, question: str, answer: str) -> tuple[float | None, int]:
    """Mean log-probability per token of `answer` as the teacher's reply to `question` (teacher prompt and
    chat template), and the number of answer tokens."""
    import torch

    if not answer.strip():
        return None, 0
    messages = [{"role": "system", "content": render("teacher_system")}, {"role": "user", "content": question}]
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    a_ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([p_ids + a_ids])
    with torch.inference_mode():
        logits = model(input_ids=ids).logits[0, len(p_ids) - 1:-1].float()
    logprobs = torch.log_softmax(logits, dim=-1).gather(1, torch.tensor(a_ids)[:, None])
    return float(logprobs.mean()), len(a_ids)


def score_answer(model: Any, tokenizer: Any, question: str, answer: str) -> dict[str, Any]:
    mean, n = answer_mean_logprob(model, tokenizer, question, answer)
    rep = repeated_fraction(answer)
    return {"score": likelihood_score(mean, rep), "mean_logprob": mean, "tokens": n, "repeated": rep}


def _fmt(x: float) -> str:
    return f"{x:g}"


def review_text(prompt: RefereePrompt, first: dict[str, Any], second: dict[str, Any]) -> str:
    """A review in the form the referee prompt asks for, saying what produced it."""
    def why(n: int, s: dict[str, Any]) -> str:
        ll = "no tokens" if s["mean_logprob"] is None else f"mean log-likelihood {s['mean_logprob']:.2f} per token"
        return f"Answer {n}: {ll} over {s['tokens']} tokens, {s['repeated']:.0%} of its word 4-grams repeated."
    explanation = ("Likelihood stand-in referee, not a language model's judgment: each score is the teacher "
                   "model's likelihood of the answer, scaled to 0-10 and reduced for repetition. "
                   f"{why(1, first)} {why(2, second)}")
    a, b = _fmt(first["score"]), _fmt(second["score"])
    if prompt.style == "vicuna":
        return f"{a} {b}\n{explanation}"
    return f"{explanation}\nScore of the Assistant 1: {a}\nScore of the Assistant 2: {b}"


def list_prompt(prompt: GeneratorPrompt) -> str:
    """The completion prompt of the list generator: a numbered list that the model continues."""
    first = prompt.example.strip().splitlines()[0].strip() if prompt.example.strip() else ""
    kind = "each on a rarer, more specialised topic of the same field" if prompt.rarer else "one per line"
    return f"A list of tasks for an AI assistant, {kind}:\n1. {first}\n2."


def task_reply(continuation: str) -> tuple[str, bool]:
    """The generator-format reply for the model's continuation, and whether the line was complete."""
    line, complete = continuation, False
    if "\n" in continuation:
        line, complete = continuation.split("\n", 1)[0], True
    line = line.strip()
    if not line:
        return "", complete
    return f"New task: {line}\nNew input: none", complete
