"""The preview as text for a terminal: per seed, what went out beside what came back.

Each exchange is two columns, the request on the left and the reply on the right, so a prompt and the
reply it drew are read together. Long texts are cut with "…" and their length: in a prompt each marked
block of material (an answer, an example task) on its own, so the template around them stays whole, then
any message still too long in its middle; a reply at its end.
"""

from __future__ import annotations

import re
import textwrap
from itertools import zip_longest

from lion_core.preview import Draw, Exchange, PreviewReport, SeedPreview, Verdict

WIDTH = 120
MESSAGE_CHARS = 1500
MATERIAL_CHARS = 300
REPLY_CHARS = 600
_MATERIAL = re.compile(r"(<<<([A-Z0-9 ]+)>>>\n)(.*?)(\n<<<END \2>>>)", re.DOTALL)
"""A block of material in a prompt (a question, an answer, an example task): the project's templates
mark each one, and cutting each on its own keeps the template's layout readable around them."""


def clip(text: str | None, limit: int, middle: bool = False) -> str:
    text = text or ""
    if len(text) <= limit:
        return text
    if middle:
        head, tail = text[: limit // 2].rstrip(), text[-(limit // 2):].lstrip()
        return f"{head}\n… ({len(text):,} chars; {len(text) - len(head) - len(tail):,} cut) …\n{tail}"
    return f"{text[:limit].rstrip()}… ({len(text):,} chars)"


def _wrap(text: str, width: int) -> list[str]:
    out: list[str] = []
    for line in text.splitlines() or [""]:
        out.extend(textwrap.wrap(line, width, break_long_words=True, break_on_hyphens=False) or [""])
    return out


def side_by_side(left_title: str, left: str, right_title: str, right: str, width: int = WIDTH) -> list[str]:
    col = (width - 3) // 2
    lines = zip_longest([left_title, "─" * min(col, len(left_title))] + _wrap(left, col),
                        [right_title, "─" * min(col, len(right_title))] + _wrap(right, col), fillvalue="")
    return [f"{a:<{col}} │ {b}".rstrip() for a, b in lines]


def clip_material(text: str) -> str:
    return _MATERIAL.sub(lambda m: m.group(1) + clip(m.group(3), MATERIAL_CHARS) + m.group(4), text)


def sent(e: Exchange) -> str:
    return "\n".join(f"[{role}] {clip(clip_material(content), MESSAGE_CHARS, middle=True)}" for role, content in e.messages)


def received(e: Exchange) -> str:
    if e.reply is None:
        return f"[no reply: {e.error}]"
    return clip(e.reply, REPLY_CHARS) or "[empty reply]"


def _tokens(e: Exchange) -> str:
    finish = f", {e.finish_reason}" if e.finish_reason else ""
    return f"{e.prompt_tokens} + {e.completion_tokens} tokens{finish}"


def exchange_lines(title: str, e: Exchange, note: str = "", width: int = WIDTH) -> list[str]:
    return side_by_side(f"{title}: sent", sent(e), f"reply ({_tokens(e)}){note}", received(e), width)


def _score(v: float | None) -> str:
    return "?" if v is None else f"{v:g}"


def verdict_lines(v: Verdict, tau: float, width: int = WIDTH) -> list[str]:
    j, out = v.judgment, []
    orders = (("teacher's answer first", v.teacher_first, j.t_score_t_first, j.s_score_t_first),
              ("student's answer first", v.student_first, j.t_score_s_first, j.s_score_s_first))
    for name, asks, t, s in orders:
        for i, e in enumerate(asks):
            last = i == len(asks) - 1
            parsed = f" → teacher {_score(t)}, student {_score(s)}" if last and t is not None else (
                " → unreadable, asked again" if not last else " → unreadable")
            out += exchange_lines(f"referee, {name}" + (f" (ask {i + 1})" if len(asks) > 1 else ""), e, parsed, width)
            out.append("")
    if j.d is not None:
        out.append(f"verdict: teacher {j.mean_t:g}, student {j.mean_s:g} (means of both orders), d = {j.d:g} "
                   f"{'≥' if j.d >= tau else '<'} tau {tau:g} → {j.label}")
    else:
        out.append(f"verdict: {j.label}" + (f" ({j.reason})" if j.reason else ""))
    return out


def seed_block(i: int, n: int, s: SeedPreview, tau: float, width: int = WIDTH) -> list[str]:
    label = s.verdict.judgment.label if s.verdict else "not judged"
    out = [f"━━━ seed {i} of {n} · {s.id[:12]} · {label} " + "━" * max(0, width - 30 - len(label)), "",
           f"instruction: {clip(s.instruction, REPLY_CHARS)}"]
    if s.input:
        out.append(f"input:       {clip(s.input, REPLY_CHARS)}")
    out += ["", *exchange_lines("teacher", s.teacher, width=width), ""]
    student = "[failed]" if s.student_answer is None else clip(s.student_answer, REPLY_CHARS) or "[silent]"
    prompt = clip(s.student_prompt, MESSAGE_CHARS, middle=True) if s.student_prompt is not None else (
        "(its tokenizer's chat template around the instruction)")
    out += [*side_by_side("student: given", prompt, "student's answer", student, width), ""]
    if s.verdict:
        out += verdict_lines(s.verdict, tau, width)
    return out + [""]


def draw_outcome(d: Draw) -> str:
    c = d.candidate
    if c.status == "accepted":
        task = clip(c.instruction, REPLY_CHARS) + (f" [input: {clip(c.input, 200)}]" if c.input else "")
        return f"→ accepted: {task}"
    if c.reason == "rouge_l":
        return f"→ rejected: rouge_l {c.max_rouge_l:.2f} against {clip(c.most_similar, 120)!r}"
    return f"→ rejected: {c.reason}"


def generation_lines(report: PreviewReport, width: int = WIDTH) -> list[str]:
    draws = report.draws
    head = (f"━━━ generation · {len(draws)} draw(s), {report.accepted} accepted "
            if draws else "━━━ generation · no draws (no item was judged hard or easy) ")
    out = [head + "━" * max(0, width - len(head)), ""]
    for i, d in enumerate(draws, 1):
        seed = f"seed {d.seed_number}" if d.seed_number else "a seed"
        out += exchange_lines(f"draw {i}, {d.candidate.origin} from {seed}", d.exchange, width=width)
        out += [draw_outcome(d), ""]
    if report.new:
        out.append("new instructions (the next Train Pool), with the teacher's answer in the final imitation:")
        for i, item in enumerate(report.new, 1):
            out += ["", *exchange_lines(f"new {i} ({item.origin})", item.teacher, width=width)] if item.teacher else [
                f"  {i}. ({item.origin}) {clip(item.instruction, REPLY_CHARS)} [not answered]"]
    return out + [""]


def tokens_lines(report: PreviewReport) -> list[str]:
    out = ["observed (tokens as the endpoints counted them; each distinct request once):",
           f"  {'role':<10} {'requests':>9} {'prompt tok':>11} {'compl tok':>10} {'compl/request':>14} {'$':>10}"]
    for role, t in report.tokens.items():
        out.append(f"  {role:<10} {t.requests:>9} {t.prompt_tokens:>11} {t.completion_tokens:>10} "
                   f"{t.mean_completion:>14.1f} {t.cost_usd:>10.4f}")
    out.append(f"  these requests cost ${sum(t.cost_usd for t in report.tokens.values()):.4f} at the configured prices "
               "(answers the response store already held were not paid again)")
    return out


def report_text(report: PreviewReport, width: int = WIDTH) -> str:
    out: list[str] = []
    for i, s in enumerate(report.seeds, 1):
        out += seed_block(i, len(report.seeds), s, report.tau, width)
    out += generation_lines(report, width)
    out += tokens_lines(report)
    return "\n".join(out)
