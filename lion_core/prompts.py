"""Prompt templates from `prompts/`, rendered by name.

Placeholders are `{{name}}` (answers and instructions often contain `{}` of their own, which stay as
they are). Rendering fails on a placeholder left unfilled or a value the template does not use, so a
template and its caller cannot drift apart silently. `LION_PROMPTS_DIR` points at another folder.
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path
from typing import Any

from lion_core.errors import LionError

_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")


def prompts_dir() -> Path:
    return Path(os.environ.get("LION_PROMPTS_DIR", Path(__file__).resolve().parents[1] / "prompts"))


@functools.cache
def _template(folder: Path, name: str) -> str:
    path = folder / f"{name}.txt"
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LionError(f"prompt template {path} not found") from None


def render(name: str, strip: bool = True, **values: str) -> str:
    """Fill template `name`; `strip` trims the file's surrounding whitespace (chat messages)."""
    text = _template(prompts_dir(), name)
    wanted = set(_PLACEHOLDER.findall(text))
    if missing := wanted - values.keys():
        raise LionError(f"prompt {name}: no value for {sorted(missing)}")
    if unused := values.keys() - wanted:
        raise LionError(f"prompt {name}: template has no {sorted(unused)}")
    out = _PLACEHOLDER.sub(lambda m: values[m.group(1)], text)
    return out.strip() if strip else out


def teacher_messages(instruction: str, input_text: str = "") -> list[tuple[str, str]]:
    block = f"\n\n{input_text}" if input_text.strip() else ""
    return [("system", render("teacher_system")), ("user", render("teacher_user", instruction=instruction, input_block=block))]


def question_text(instruction: str, input_text: str = "") -> str:
    return f"{instruction}\n\n{input_text}" if input_text.strip() else instruction


def student_prompt(instruction: str, input_text: str = "", fmt: str = "alpaca", tokenizer: object | None = None) -> str:
    """The student's prompt: the Alpaca format, or the tokenizer's own chat template."""
    if fmt == "alpaca":
        section = f"### Input:\n{input_text}\n\n" if input_text.strip() else ""
        return render("student_alpaca", strip=False, instruction=instruction, input_section=section)
    if fmt == "chat_template":
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise LionError("prompt format chat_template needs a tokenizer with a chat template")
        return tokenizer.apply_chat_template(  # type: ignore[attr-defined]
            [{"role": "user", "content": question_text(instruction, input_text)}], tokenize=False,
            add_generation_prompt=True,
        )
    raise LionError(f"unknown student prompt format {fmt!r}")


def alpaca_chat_template(bos: bool = False) -> str:
    """A Jinja chat template that renders `student_alpaca.txt` exactly: a user message's `content` is the
    instruction and its optional `input` key the input; an assistant message is the answer and EOS.
    Saved with every Alpaca-trained checkpoint, so `apply_chat_template`, `transformers serve` and
    vLLM prompt it the way it was trained. Built from the same template file, so the two cannot drift."""
    instruction, section = "\x00instruction\x00", "\x00section\x00"
    text = render("student_alpaca", strip=False, instruction=instruction, input_section=section)
    jinja = (text.replace("{", "{{ '{' }}").replace(instruction, "{{ message['content'] }}")
             .replace(section, "{% if message['input'] is defined and message['input'] | trim %}### Input:\n"
                               "{{ message['input'] }}\n\n{% endif %}"))
    # Servers tokenize a rendered chat without adding special tokens: a tokenizer that puts BOS in
    # front of every text during training gets it from the template.
    return (("{{ bos_token }}" if bos else "") + "{% for message in messages %}{% if message['role'] == 'user' %}"
            + jinja + "{% elif message['role'] == 'assistant' %}{{ message['content'] }}{{ eos_token }}{% endif %}"
            "{% endfor %}")


def adds_bos(tokenizer: Any) -> bool:
    """Whether the tokenizer puts BOS in front of a text by itself (LLaMA's does, SmolLM2's does not)."""
    bos = getattr(tokenizer, "bos_token_id", None)
    return bos is not None and tokenizer("x")["input_ids"][:1] == [bos]


def checkpoint_prompt(tokenizer: Any, instruction: str, input_text: str = "", fmt: str = "alpaca") -> str:
    """The prompt text a checkpoint is trained and asked with (tokenized with the tokenizer's own special
    tokens): through its chat template when it carries the Alpaca one (every Lion checkpoint), else
    rendered from the template file (the base model)."""
    template = getattr(tokenizer, "chat_template", None)
    if fmt == "alpaca" and template in (alpaca_chat_template(False), alpaca_chat_template(True)):
        text = tokenizer.apply_chat_template([{"role": "user", "content": instruction, "input": input_text}],
                                             tokenize=False, add_generation_prompt=True)
        bos = tokenizer.bos_token or ""
        return text[len(bos):] if template == alpaca_chat_template(True) and text.startswith(bos) else text
    return student_prompt(instruction, input_text, fmt, tokenizer)
