"""`lion run --preview N`: a run of its own on the first N seeds, one iteration, read back for the user.

The preview pays the real endpoints, under the user's own settings and cap, so what it shows is what
the full run will send and get: the prompts as the response store kept them (exactly what went out),
the raw replies, the verdicts and new instructions as the run committed them. Nothing is sent again to
show them. Its token counts then replace the plan's guesses (lion_core.planning.Assumptions) in the
projection of the full run.

The text layout lives in lion_core.preview_text; this module gathers and measures.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from lion_core.config import RefereeConfig, RunConfig, parse_config
from lion_core.discrimination.judging import JudgeItem, JudgmentRow, judge_request
from lion_core.discrimination.stage import judge_items
from lion_core.discrimination.verdicts import Unparsed, parse_judgment
from lion_core.generation.candidates import CandidateRow, generator_request
from lion_core.imitation.answers import AnswerRow, answer_request
from lion_core.limits import role_config
from lion_core.llm.requests import ChatRequest
from lion_core.llm.responses import ResponseStore
from lion_core.planning import Assumptions, cost, tokens
from lion_core.prompts import student_prompt
from lion_core.results import Judging
from lion_core.rows import rows_of
from lion_core.shards import committed
from lion_core.store import RunStore

API_ROLES = ("teacher", "referee", "generator")


def preview_config(config: RunConfig, n: int, seed_file: str) -> RunConfig:
    """The user's config cut down to a preview: one iteration on `seed_file`, N new instructions (one per
    seed, so the generator's stage shows as many draws as the others), no evaluation after the run.
    Endpoints, keys, sampling, training and limits stay the user's: the preview pays what the run pays.
    Validated again, so the derived config is one the loader accepts."""
    data = config.to_json_dict()
    data["loop"].update(iterations=1, new_instructions_per_iteration=n)
    data["data"]["seed"] = seed_file
    data["evaluation"]["after_run"] = False
    return parse_config(data, "<preview config>")


def seeds_jsonl(rows: Sequence[dict[str, Any]]) -> str:
    """Seed rows back as a JSONL seed file: instruction, input and the seed's own answer where it had
    one (the ids, hashes of instruction and input, stay those of the full run)."""
    out = []
    for r in rows:
        record = {"instruction": r["instruction"], "input": r["input"]}
        if output := _metadata(r).get("output"):
            record["output"] = output
        out.append(json.dumps(record, ensure_ascii=False) + "\n")
    return "".join(out)


def _metadata(row: dict[str, Any]) -> dict[str, Any]:
    meta = row.get("metadata")
    return (json.loads(meta) if isinstance(meta, str) else meta) or {}


@dataclass(frozen=True)
class Exchange:
    """One request: the messages that went out and the reply that came back, as the response store
    keeps them. Tokens are the endpoint's own count (its `usage`), else estimated from the text."""

    role: str
    messages: tuple[tuple[str, str], ...]
    reply: str | None
    """None: the request failed, or the store has no row for it."""
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    error: str | None
    key: str
    """The response store's key of the row ("" where it has none)."""


@dataclass(frozen=True)
class Verdict:
    """The referee on one item: every ask in each order (a re-ask follows an unreadable reply), the
    scores as parsed, in (teacher, student) terms, and the label."""

    teacher_first: tuple[Exchange, ...]
    student_first: tuple[Exchange, ...]
    judgment: JudgmentRow


@dataclass(frozen=True)
class SeedPreview:
    id: str
    instruction: str
    input: str
    teacher: Exchange
    student_prompt: str | None
    """What the student was given (None: the tokenizer's chat template, which needs the model to render)."""
    student_answer: str | None
    """None: the student's answer failed; "" is a silent student."""
    verdict: Verdict | None


@dataclass(frozen=True)
class Draw:
    """One generator draw and what became of it."""

    exchange: Exchange
    candidate: CandidateRow
    seed_number: int | None
    """1-based position of its seed among the previewed seeds."""


@dataclass(frozen=True)
class NewInstruction:
    instruction: str
    input: str
    origin: str
    teacher: Exchange | None
    """The teacher's answer to it in the final imitation."""


@dataclass(frozen=True)
class RoleTokens:
    requests: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float

    @property
    def mean_completion(self) -> float:
        return self.completion_tokens / self.requests if self.requests else 0.0


@dataclass(frozen=True)
class PreviewReport:
    run_id: str
    tau: float
    seeds: list[SeedPreview]
    draws: list[Draw]
    new: list[NewInstruction]
    tokens: dict[str, RoleTokens]
    """Per API role, each distinct request once (the Train and Cache Pools ask the teacher the same)."""
    referee_pairs: int
    """(item, order) pairs the referee was asked about: the re-ask rate's denominator."""
    reasks: int

    @property
    def accepted(self) -> int:
        return sum(d.candidate.status == "accepted" for d in self.draws)


def _exchange(role: str, request: ChatRequest, row: dict[str, Any] | None) -> Exchange:
    messages = request.messages
    if row and row.get("request"):
        messages = tuple((m["role"], m["content"]) for m in json.loads(row["request"])["messages"])
    ok = bool(row) and row["status"] == "ok"
    reply = row["text"] if ok else None
    prompt = (row or {}).get("prompt_tokens") or sum(tokens(c) for _, c in messages)
    completion = ((row or {}).get("completion_tokens") or tokens(reply)) if reply is not None else 0
    error = None if ok else (f"{row['error_class']}: {row['error_message']}" if row else "not in the response store")
    return Exchange(role=role, messages=messages, reply=reply, finish_reason=(row or {}).get("finish_reason"),
                    prompt_tokens=prompt, completion_tokens=completion, error=error, key=(row or {}).get("key", ""))


class _Lookup:
    """Requests rebuilt as the run built them, found in the response store by their keys."""

    def __init__(self, config: RunConfig, responses: ResponseStore):
        self.config, self.responses = config, responses
        self.seen: dict[str, Exchange] = {}

    def __call__(self, role: str, request: ChatRequest) -> tuple[Exchange, bool]:
        """The exchange, and whether the store has a row for it."""
        settings = role_config(self.config, role)
        key = request.key(settings.base_url, settings.model)
        row = self.responses.row(key)
        found = _exchange(role, request, row)
        if row:
            self.seen[key] = found
        return found, row is not None


def gather(store: RunStore, config: RunConfig, responses: ResponseStore) -> PreviewReport:
    """Everything iteration 0 of the preview run (and its final imitation) sent and got, per seed,
    per generator draw and per new instruction, from its committed tables and the response store."""
    look = _Lookup(config, responses)
    cache = store.read_pool(store.ref(0, "cache_pool")).to_dict("records")
    student = {r.id: r for r in _answers(store, 0, "student_answers")}
    verdicts = _verdicts(store, config, cache, look)
    seeds = []
    for r in cache:
        teacher, _ = look("teacher", answer_request(r, config.teacher.sampling))
        answer = student.get(r["id"])
        shown = student_prompt(r["instruction"], r["input"]) if config.student.prompt_format == "alpaca" else None
        said = (answer.answer or "") if answer and answer.status != "failed" else None
        seeds.append(SeedPreview(id=r["id"], instruction=r["instruction"], input=r["input"], teacher=teacher,
                                 student_prompt=shown, student_answer=said, verdict=verdicts.get(r["id"])))
    draws = _draws(store, config, cache, look)
    new = []
    if (train := committed(store, 1, "train_pool")) is not None:
        answered = {a.id for a in _answers(store, 1, "teacher_answers_train")}
        for r in store.read_pool(train).to_dict("records"):
            exchange = look("teacher", answer_request(r, config.teacher.sampling))[0] if r["id"] in answered else None
            new.append(NewInstruction(instruction=r["instruction"], input=r["input"], origin=r["origin"], teacher=exchange))
    judged = [v.judgment for v in verdicts.values()]
    return PreviewReport(
        run_id=store.run_id, tau=config.loop.tau, seeds=seeds, draws=draws, new=new,
        tokens=_role_tokens(config, look.seen.values()),
        referee_pairs=2 * sum(bool(j.asks) for j in judged),
        reasks=sum(max((j.asks or 0) - 2, 0) for j in judged))


def _answers(store: RunStore, k: int, name: str) -> list[AnswerRow]:
    ref = committed(store, k, name)
    return rows_of(store.read_table(ref), AnswerRow, ref.uri) if ref else []


def _verdicts(store: RunStore, config: RunConfig, cache: list[dict[str, Any]], look: _Lookup) -> dict[str, Verdict]:
    judgments, teacher, student = (committed(store, 0, n) for n in ("judgments", "teacher_answers_cache", "student_answers"))
    if not (judgments and teacher and student):
        return {}
    items = {i.id: i for i in judge_items(store, cache, Judging(teacher=teacher, student=student))[0]}
    referee, out = config.referee, {}
    for j in rows_of(store.read_table(judgments), JudgmentRow, judgments.uri):
        item = items.get(j.id or "")
        if item is None or not j.asks:  # labelled without asking: a silent student, a missing answer
            out[j.id or ""] = Verdict(teacher_first=(), student_first=(), judgment=j)
            continue
        out[j.id or ""] = Verdict(teacher_first=_asks(item, True, referee, look),
                                  student_first=_asks(item, False, referee, look), judgment=j)
    return out


def _asks(item: JudgeItem, teacher_first: bool, referee: RefereeConfig, look: _Lookup) -> tuple[Exchange, ...]:
    """Every ask of one order, as `discriminate` made them: sample 0, then the next sample after each
    failed or unreadable reply, until one reads."""
    s, out = referee.sampling, []
    for ask in range(referee.max_reasks + 1):
        request = judge_request(item, teacher_first, referee.prompt_style, s.temperature, s.top_p, s.max_tokens,
                                sample_index=ask)
        exchange, stored = look("referee", request)
        if not stored:
            break
        out.append(exchange)
        if exchange.reply is not None and not isinstance(parse_judgment(exchange.reply, referee.prompt_style), Unparsed):
            break
    return tuple(out)


def _draws(store: RunStore, config: RunConfig, cache: list[dict[str, Any]], look: _Lookup) -> list[Draw]:
    ref = committed(store, 0, "candidates")
    if ref is None:
        return []
    by_id = {r["id"]: r for r in cache}
    number = {r["id"]: i + 1 for i, r in enumerate(cache)}
    uses: Counter[str] = Counter()  # the rounds count draws of one seed the same way: its sample index
    out = []
    for c in rows_of(store.read_table(ref), CandidateRow, ref.uri):
        seed = by_id.get(c.seed_id or "")
        if seed is None:
            continue
        request = generator_request(seed, c.origin or "hard", config.generator, sample_index=uses[seed["id"]], iteration=0)
        uses[seed["id"]] += 1
        exchange, stored = look("generator", request)
        if not stored:  # the candidates file still has the reply
            exchange = Exchange(role="generator", messages=request.messages, reply=c.raw, finish_reason=c.finish_reason,
                                prompt_tokens=sum(tokens(m) for _, m in request.messages),
                                completion_tokens=tokens(c.raw or ""), error=None, key="")
        out.append(Draw(exchange=exchange, candidate=c, seed_number=number.get(seed["id"])))
    return out


def _role_tokens(config: RunConfig, exchanges: Iterable[Exchange]) -> dict[str, RoleTokens]:
    out = {}
    for role in API_ROLES:
        mine = [e for e in exchanges if e.role == role]
        prompt, completion = sum(e.prompt_tokens for e in mine), sum(e.completion_tokens for e in mine)
        settings = role_config(config, role)
        price = settings.batch_price() if settings.mode == "batch" else settings.price
        out[role] = RoleTokens(requests=len(mine), prompt_tokens=prompt, completion_tokens=completion,
                               cost_usd=cost(1, prompt, completion, price))
    return out


@dataclass(frozen=True)
class Observed:
    """The plan's assumptions as the preview measured them, and how each was measured."""

    assumptions: Assumptions
    notes: list[str]


def observed_assumptions(report: PreviewReport, config: RunConfig) -> Observed:
    """Assumptions from what the preview observed; where it observed nothing, the plan's default, said so.
    A handful of draws against a Cache Pool of N items makes the acceptance optimistic: ROUGE-L rejects
    more as the pool grows."""
    default, notes = Assumptions(), []
    teacher, referee = report.tokens["teacher"], report.tokens["referee"]
    teacher_tokens = max(1, round(teacher.mean_completion)) if teacher.requests else None
    notes.append(f"teacher replies {teacher_tokens} tokens (mean of {teacher.requests})" if teacher_tokens
                 else "teacher replies: none observed; the seeds' own answers or half of max_tokens")
    referee_tokens = max(1, round(referee.mean_completion)) if referee.requests else default.referee_reply_tokens
    notes.append(f"referee replies {referee_tokens} tokens (mean of {referee.requests})" if referee.requests
                 else f"referee replies: none observed; {referee_tokens} assumed")
    reask = report.reasks / report.referee_pairs if report.referee_pairs else default.reask_rate
    notes.append(f"{reask:.0%} referee re-asks ({report.reasks} over {report.referee_pairs} verdicts)" if report.referee_pairs
                 else f"referee re-asks: none observed; {reask:.0%} assumed")
    floor = 1 / config.generator.request_budget_factor  # below it a generation is bound by its budget anyway
    if report.draws:
        kept = report.accepted / len(report.draws)
        acceptance = max(kept, floor)
        notes.append(f"{kept:.0%} of generator draws kept ({report.accepted} of {len(report.draws)}, against a Cache "
                     f"Pool of {len(report.seeds)}: a larger pool rejects more)"
                     + (f"; planned at {acceptance:.0%}, the request budget's bound" if acceptance > kept else ""))
    else:
        acceptance = default.acceptance
        notes.append(f"generator draws: none observed; {acceptance:.0%} kept assumed")
    return Observed(Assumptions(acceptance=min(acceptance, 1.0), reask_rate=reask, referee_reply_tokens=referee_tokens,
                                teacher_reply_tokens=teacher_tokens), notes)
