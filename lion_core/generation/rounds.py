"""Generation rounds: new instructions from hard and easy seeds, kept only when new enough.

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
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lion_core.config import GeneratorConfig, LoopConfig
from lion_core.generation.candidates import CandidateRow, Rejected, generator_request, parse_candidate, split_quota
from lion_core.generation.novelty import filter_novel
from lion_core.llm.gateway import ChatGateway
from lion_core.pools import instruction_id, make_row
from lion_core.results import GenerationReport, SeedInputFigures


@dataclass
class GeneratedInstructions:
    accepted: list[dict[str, Any]]
    """New pool rows (origin hard/easy, parent_id = seed id, iteration = the next one)."""
    candidates: list[CandidateRow]
    """Every candidate asked for, with its outcome and reason."""
    report: GenerationReport


def generate(
    gateway: ChatGateway,
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
        fresh: list[CandidateRow] = []
        for (origin, seed), req, res in zip(plan, requests, results):
            cand = CandidateRow(round=rounds, origin=origin, seed_id=seed["id"], seed_instruction=seed["instruction"],
                                seed_has_input=bool((seed.get("input") or "").strip()), max_tokens=req.max_tokens,
                                cached=res.cached, raw=res.text if res.ok else None, finish_reason=res.finish_reason,
                                instruction=None, input=None, status="rejected", reason=None, max_rouge_l=None,
                                most_similar=None)
            candidates.append(cand)
            if not res.ok:
                cand.reason = "request_failed"
                cand.raw = f"[{res.error_class}: {res.error_message}]"
                continue
            parsed = parse_candidate(res.text, res.finish_reason, cfg)
            if isinstance(parsed, Rejected):
                cand.reason = parsed.reason
                continue
            cand.instruction, cand.input = parsed.instruction, parsed.input
            cid = instruction_id(parsed.instruction, parsed.input)
            if cid in known_ids:
                cand.reason = "duplicate"
                continue
            known_ids.add(cid)
            fresh.append(cand)
        started = time.perf_counter()
        verdicts = filter_novel(pool_texts, [c.instruction or "" for c in fresh], threshold, tokenizer_name)
        filter_seconds += time.perf_counter() - started
        for cand, v in zip(fresh, verdicts):
            cand.max_rouge_l = v.max_rouge_l
            if v.most_similar is not None:
                k = v.most_similar
                cand.most_similar = pool_texts[k] if k < len(pool_texts) else fresh[k - len(pool_texts)].instruction
            if not v.accepted:
                cand.reason = "rouge_l"
                continue
            cand.status, cand.reason = "accepted", None
            got[cand.origin] += 1
            accepted.append(accepted_row(cand, next_iteration))
        pool_texts.extend(c.instruction or "" for c, v in zip(fresh, verdicts) if v.accepted)
    reached = all(got[o] >= quota[o] for o in quota)
    if n_new and not hard_seeds and not easy_seeds:
        outcome = "no seeds: no item was judged hard or easy"
    elif reached:
        outcome = "target reached"
    else:
        outcome = "request budget spent" if spent >= budget else "round limit reached"
    report = GenerationReport(
        target=n_new, quota=dict(quota), accepted=dict(got), accepted_total=len(accepted),
        requests=spent, request_budget=budget, rounds=rounds, outcome=outcome,
        rejected_by_reason=dict(Counter(c.reason for c in candidates if c.status == "rejected")),
        truncated_by_reason=truncation_reasons(candidates, cfg), by_seed_input=seed_input_figures(candidates),
        fresh_draws=sum(not c.cached for c in candidates), stored_draws=sum(bool(c.cached) for c in candidates),
        hard_seeds=len(hard_seeds), easy_seeds=len(easy_seeds), filter_seconds=round(filter_seconds, 3),
    )
    return GeneratedInstructions(accepted=accepted, candidates=candidates, report=report)


def accepted_row(cand: CandidateRow, next_iteration: int) -> dict[str, Any]:
    """The pool row of an accepted candidate (also rebuilt from the candidates file by the pool update)."""
    return make_row(cand.instruction or "", cand.input or "", origin=cand.origin or "", iteration=next_iteration,
                    parent_id=cand.seed_id, metadata={"round": cand.round, "max_rouge_l": cand.max_rouge_l})


def truncation_reasons(candidates: Sequence[CandidateRow], cfg: GeneratorConfig) -> dict[str, int]:
    """Replies cut off at max_tokens, by why the budget was short: the ceiling capped it, the fixed
    `sampling.max_tokens` was set, or the reply outran its proportional budget (a seed with or
    without an input)."""
    out: Counter[str] = Counter()
    for c in candidates:
        if c.reason != "truncated":
            continue
        if cfg.sampling.max_tokens:
            out["fixed_max_tokens"] += 1
        elif (c.max_tokens or 0) >= cfg.max_tokens_ceiling:
            out["at_ceiling"] += 1
        else:
            out["seed_with_input" if c.seed_has_input else "seed_without_input"] += 1
    return dict(sorted(out.items()))


def seed_input_figures(candidates: Sequence[CandidateRow]) -> dict[str, SeedInputFigures]:
    """Requests, truncations and acceptances from seeds with and without an input: the budget rule's
    effect on the 38% of Alpaca seeds that carry an input shows here."""
    out: dict[str, SeedInputFigures] = {}
    for key, has in (("with_input", True), ("without_input", False)):
        group = [c for c in candidates if bool(c.seed_has_input) == has]
        out[key] = SeedInputFigures(requests=len(group), truncated=sum(c.reason == "truncated" for c in group),
                                    accepted=sum(c.status == "accepted" for c in group))
    return out
