"""Generation: new instructions from hard and easy seeds, kept only when new enough.

Seeds are drawn from the hard and easy sets at the configured ratio (1:1 in the paper); the hard prompt
asks for a new task of the same domain and kind, the easy prompt for a rarer topic of the same domain.
Every candidate gets a recorded outcome: accepted, or rejected with a reason (request_failed, truncated,
unparseable, empty, too_short, too_long, leaked_markers, refusal, duplicate, rouge_l). Rounds go on
until N are accepted or the request budget is spent. The draws come from a seeded generator, so a
resumed run asks exactly the same requests again and the response store answers them for free.
Hard and easy candidates go through one novelty filter together, against the Cache Pool and
everything accepted before them.
"""

from __future__ import annotations

import math
import random
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lion_core.config import GeneratorConfig, LoopConfig
from lion_core.llm.gateway import Gateway
from lion_core.llm.requests import ChatRequest
from lion_core.novelty import filter_novel
from lion_core.pools import instruction_id, make_row
from lion_core.prompts import question_text, render

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


@dataclass
class GeneratedInstructions:
    accepted: list[dict[str, Any]]
    """New pool rows (origin hard/easy, parent_id = seed id, iteration = the next one)."""
    candidates: list[dict[str, Any]]
    """Every candidate asked for, with its outcome and reason."""
    report: dict[str, Any]


def generate(
    gateway: Gateway,
    *,
    hard_seeds: Sequence[dict[str, Any]],
    easy_seeds: Sequence[dict[str, Any]],
    cache_pool: Sequence[dict[str, Any]],
    next_iteration: int,
    loop: LoopConfig,
    cfg: GeneratorConfig,
    stage: str = "generation",
) -> GeneratedInstructions:
    """`loop.new_instructions_per_iteration` new instructions for `next_iteration`, split between hard
    and easy seeds by `loop.hard_easy_ratio`, each kept only when its ROUGE-L against the Cache Pool
    and the ones kept before stays within `loop.rouge_l_threshold`."""
    n_new, ratio, threshold = loop.new_instructions_per_iteration, loop.hard_easy_ratio, loop.rouge_l_threshold
    random_seed, tokenizer_name = loop.random_seed, loop.rouge_tokenizer
    quota = dict(zip(("hard", "easy"), split_quota(n_new, ratio, len(hard_seeds), len(easy_seeds))))
    seeds = {"hard": list(hard_seeds), "easy": list(easy_seeds)}
    budget = math.ceil(n_new * cfg.request_budget_factor)
    rng = random.Random(f"{random_seed}:{next_iteration}:generation")
    uses: Counter[str] = Counter()  # per seed id, so repeated draws of one seed are distinct requests
    pool_texts = [r["instruction"] for r in cache_pool]
    known_ids = {r["id"] for r in cache_pool}
    accepted: list[dict[str, Any]] = []
    got: Counter[str] = Counter()
    candidates: list[dict[str, Any]] = []
    spent, rounds, filter_seconds = 0, 0, 0.0
    while rounds < cfg.max_rounds and spent < budget and any(got[o] < quota[o] for o in quota):
        rounds += 1
        plan: list[tuple[str, dict[str, Any]]] = []
        for origin in ("hard", "easy"):
            for _ in range(min(quota[origin] - got[origin], budget - spent - len(plan))):
                plan.append((origin, rng.choice(seeds[origin])))
        rng.shuffle(plan)  # hard and easy candidates interleave and are filtered against each other
        requests = []
        for origin, seed in plan:
            requests.append(generator_request(seed, origin, cfg, sample_index=uses[seed["id"]],
                                              iteration=next_iteration - 1))
            uses[seed["id"]] += 1
        spent += len(requests)
        results = gateway.run_sync(requests, stage)
        fresh: list[dict[str, Any]] = []
        for (origin, seed), req, res in zip(plan, requests, results):
            cand = {"round": rounds, "origin": origin, "seed_id": seed["id"], "seed_instruction": seed["instruction"],
                    "seed_has_input": bool((seed.get("input") or "").strip()), "max_tokens": req.max_tokens,
                    "cached": res.cached, "raw": res.text if res.ok else None, "finish_reason": res.finish_reason,
                    "instruction": None, "input": None, "status": "rejected", "reason": None, "max_rouge_l": None,
                    "most_similar": None}
            candidates.append(cand)
            if not res.ok:
                cand["reason"] = "request_failed"
                cand["raw"] = f"[{res.error_class}: {res.error_message}]"
                continue
            parsed = parse_candidate(res.text, res.finish_reason, cfg)
            if isinstance(parsed, Rejected):
                cand["reason"] = parsed.reason
                continue
            cand["instruction"], cand["input"] = parsed.instruction, parsed.input
            cid = instruction_id(parsed.instruction, parsed.input)
            if cid in known_ids:
                cand["reason"] = "duplicate"
                continue
            known_ids.add(cid)
            fresh.append(cand)
        started = time.perf_counter()
        verdicts = filter_novel(pool_texts, [c["instruction"] for c in fresh], threshold, tokenizer_name)
        filter_seconds += time.perf_counter() - started
        for cand, v in zip(fresh, verdicts):
            cand["max_rouge_l"] = v.max_rouge_l
            if v.most_similar is not None:
                k = v.most_similar
                cand["most_similar"] = pool_texts[k] if k < len(pool_texts) else fresh[k - len(pool_texts)]["instruction"]
            if not v.accepted:
                cand["reason"] = "rouge_l"
                continue
            cand["status"], cand["reason"] = "accepted", None
            got[cand["origin"]] += 1
            accepted.append(make_row(cand["instruction"], cand["input"], origin=cand["origin"], iteration=next_iteration,
                                     parent_id=cand["seed_id"],
                                     metadata={"round": rounds, "max_rouge_l": v.max_rouge_l}))
        pool_texts.extend(c["instruction"] for c, v in zip(fresh, verdicts) if v.accepted)
    reached = all(got[o] >= quota[o] for o in quota)
    if n_new and not hard_seeds and not easy_seeds:
        outcome = "no seeds: no item was judged hard or easy"
    elif reached:
        outcome = "target reached"
    else:
        outcome = "request budget spent" if spent >= budget else "round limit reached"
    report = {
        "target": n_new, "quota": dict(quota), "accepted": dict(got), "accepted_total": len(accepted),
        "requests": spent, "request_budget": budget, "rounds": rounds,
        "outcome": outcome,
        "rejected_by_reason": dict(Counter(c["reason"] for c in candidates if c["status"] == "rejected")),
        "truncated_by_reason": truncation_reasons(candidates, cfg),
        "by_seed_input": seed_input_figures(candidates),
        "fresh_draws": sum(not c["cached"] for c in candidates), "stored_draws": sum(c["cached"] for c in candidates),
        "hard_seeds": len(hard_seeds), "easy_seeds": len(easy_seeds), "filter_seconds": round(filter_seconds, 3),
    }
    return GeneratedInstructions(accepted=accepted, candidates=candidates, report=report)


def truncation_reasons(candidates: Sequence[dict[str, Any]], cfg: GeneratorConfig) -> dict[str, int]:
    """Replies cut off at max_tokens, by why the budget was short: the ceiling capped it, the fixed
    `sampling.max_tokens` was set, or the reply outran its proportional budget (a seed with or
    without an input)."""
    out: Counter[str] = Counter()
    for c in candidates:
        if c["reason"] != "truncated":
            continue
        if cfg.sampling.max_tokens:
            out["fixed_max_tokens"] += 1
        elif c["max_tokens"] >= cfg.max_tokens_ceiling:
            out["at_ceiling"] += 1
        else:
            out["seed_with_input" if c["seed_has_input"] else "seed_without_input"] += 1
    return dict(sorted(out.items()))


def seed_input_figures(candidates: Sequence[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Requests, truncations and acceptances from seeds with and without an input: the budget rule's
    effect on the 38% of Alpaca seeds that carry an input shows here."""
    out: dict[str, dict[str, int]] = {}
    for key, has in (("with_input", True), ("without_input", False)):
        group = [c for c in candidates if c["seed_has_input"] == has]
        out[key] = {"requests": len(group), "truncated": sum(c["reason"] == "truncated" for c in group),
                    "accepted": sum(c["status"] == "accepted" for c in group)}
    return out
