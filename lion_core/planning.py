"""What a run will ask the API for, and what that costs, before any paid request (`lion plan`).

Per iteration, stage and role: requests, prompt and completion tokens, dollars at the interactive and
the batch price, and minutes at the role's configured limits. The schedule is the loop's own:

- imitation: the teacher answers the Train Pool (the seeds, then `new_instructions_per_iteration` new
  ones each iteration, and the final Train Pool once more after the last iteration);
- discrimination: the Cache Pool's teacher answers all come from the response store (every item was a
  Train Pool item once); the referee judges every Cache Pool item in both orders, plus re-asks;
- generation: draws until the target is accepted, at an assumed acceptance, within the request budget;
- the evaluation after the run (`evaluation.after_run`): the reference answers once, the judge every
  checkpoint in both orders.

Prompt tokens come from the requests the run itself builds (its prompts around the seeds' text) on a
sample of the seeds; completion tokens from the seeds' own answers where the seed file has them
(Alpaca's `output`), otherwise from the stated assumptions. Tokens are counted as the rate limiter
counts them, about 4 characters a token (`ChatRequest.estimated_tokens`): an estimate, said so in the
plan. A resume plans only what is left: committed stages cost nothing, and the current iteration's
teacher answers and first referee verdicts are looked up in the response store request by request.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from lion_core.config import ApiRole, Price, RunConfig
from lion_core.discrimination.judging import JudgeItem, judge_request
from lion_core.discrimination.stage import judge_items
from lion_core.generation.candidates import generator_request
from lion_core.imitation.answers import answer_request
from lion_core.limits import role_config
from lion_core.llm.requests import ChatRequest
from lion_core.llm.responses import ResponseStore
from lion_core.results import Judging
from lion_core.shards import committed
from lion_core.store import RunStore

TOKEN_COUNTING = "estimated: about 4 characters a token (the rate limiter's own count), not the model's tokenizer"
SAMPLE = 2000
"""Seeds whose requests are built to measure the mean prompt: enough for a mean, quick at 52K seeds."""


class Assumptions(BaseModel):
    """What the plan cannot know before the run: stated, and changeable on the command line."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    acceptance: float = Field(0.5, gt=0, le=1)
    """Share of the generator's draws the parser and the ROUGE-L filter keep."""
    reask_rate: float = Field(0.02, ge=0)
    """Referee re-asks per verdict (replies that cannot be read)."""
    referee_reply_tokens: int = Field(150, gt=0)
    teacher_reply_tokens: int | None = Field(None, gt=0)
    """None: the mean of the seeds' own answers where they have them, else half the teacher's max_tokens."""


class PlanRow(BaseModel):
    model_config = ConfigDict(frozen=True)

    iteration: str
    """`0`, `1`, ...; `final` (the last Train Pool's imitation); `evaluation`."""
    stage: str
    role: str
    requests: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    batch_cost_usd: float
    minutes: float
    """At the role's requests- and tokens-per-minute limits, whichever binds (0 for a role in batch mode)."""


class Plan(BaseModel):
    model_config = ConfigDict(frozen=True)

    seeds: int
    iterations: int
    rows: list[PlanRow]
    requests: int
    cost_usd: float
    batch_cost_usd: float
    hours: float
    token_counting: str = TOKEN_COUNTING
    assumptions: Assumptions
    resumed_from: str | None = None

    def by(self, key: str) -> dict[str, dict[str, float]]:
        """Totals by `role`, `stage` or `iteration`."""
        out: dict[str, dict[str, float]] = {}
        for r in self.rows:
            acc = out.setdefault(getattr(r, key), {"requests": 0, "cost_usd": 0.0, "batch_cost_usd": 0.0, "minutes": 0.0})
            acc["requests"] += r.requests
            acc["cost_usd"] += r.cost_usd
            acc["batch_cost_usd"] += r.batch_cost_usd
            acc["minutes"] += r.minutes
        return out


def tokens(text: str) -> int:
    return len(text) // 4 + 1


def prompt_tokens(request: ChatRequest) -> int:
    return request.estimated_tokens() - (request.max_tokens or 256)


class RoleMeans(BaseModel):
    prompt: float
    completion: float


def teacher_reply_tokens(rows: Sequence[dict[str, Any]], config: RunConfig, assumptions: Assumptions) -> float:
    outputs = [o for r in rows if (o := _output(r))]
    if assumptions.teacher_reply_tokens:
        return assumptions.teacher_reply_tokens
    return statistics.fmean(tokens(o) for o in outputs) if outputs else (config.teacher.sampling.max_tokens or 512) / 2


def role_requests(rows: Sequence[dict[str, Any]], config: RunConfig, assumptions: Assumptions) -> dict[str, list[ChatRequest]]:
    """The requests each role would be sent for these rows, built as the run builds them. The referee's
    prompts hold the row's own answer as the teacher's where the seeds have one, and a stand-in answer of
    the assumed length for the student's."""
    answer = "x" * int(teacher_reply_tokens(rows, config, assumptions) * 4)
    rs = config.referee.sampling
    return {
        "teacher": [answer_request(r, config.teacher.sampling) for r in rows],
        "referee": [judge_request(JudgeItem(r["id"], r["instruction"], r["input"], _output(r) or answer, answer), first,
                                  config.referee.prompt_style, rs.temperature, rs.top_p, rs.max_tokens)
                    for r in rows for first in (True, False)],
        "generator": [generator_request(r, "hard" if i % 2 else "easy", config.generator, sample_index=0, iteration=0)
                      for i, r in enumerate(rows)],
    }


def measure(seeds: Sequence[dict[str, Any]], config: RunConfig, assumptions: Assumptions) -> dict[str, RoleMeans]:
    """Mean prompt and completion tokens of each role's requests, built from a sample of the seeds."""
    rows = list(seeds) if len(seeds) <= SAMPLE else random.Random(0).sample(list(seeds), SAMPLE)
    built = role_requests(rows, config, assumptions)
    return {
        "teacher": RoleMeans(prompt=_mean(map(prompt_tokens, built["teacher"])),
                             completion=teacher_reply_tokens(rows, config, assumptions)),
        "referee": RoleMeans(prompt=_mean(map(prompt_tokens, built["referee"])), completion=assumptions.referee_reply_tokens),
        "generator": RoleMeans(prompt=_mean(map(prompt_tokens, built["generator"])),
                               completion=_mean(tokens(f"New task: {r['instruction']}\nNew input: {r['input']}")
                                                for r in rows)),
    }


def _output(row: dict[str, Any]) -> str:
    import json

    meta = row.get("metadata")
    return (json.loads(meta) if isinstance(meta, str) else meta or {}).get("output", "") or ""


def _mean(values: Any) -> float:
    values = list(values)
    return statistics.fmean(values) if values else 0.0


def generator_draws(config: RunConfig, acceptance: float) -> int:
    """Draws of one generation: until the target is accepted at `acceptance`, within the request budget."""
    n = config.loop.new_instructions_per_iteration
    return min(math.ceil(n / acceptance), math.ceil(n * config.generator.request_budget_factor))


def schedule(config: RunConfig, n_seeds: int, assumptions: Assumptions,
             eval_questions: int = 0) -> list[tuple[str, str, str, int]]:
    """(iteration, stage, role, requests) of a whole run, fresh."""
    n, iterations = config.loop.new_instructions_per_iteration, config.loop.iterations
    out = []
    if config.loop.selection == "one_shot":  # no student, no referee: generation rounds, then the teacher once
        out += [(str(k), "generation", "generator", generator_draws(config, assumptions.acceptance)) for k in range(iterations)]
        out.append(("final", "imitation", "teacher", n_seeds + iterations * n))
        return out + _evaluation(config, eval_questions, 2, assumptions)  # the base model and the final one
    for k in range(iterations):
        out.append((str(k), "imitation", "teacher", n_seeds if k == 0 else n))
        cache = n_seeds + k * n
        out.append((str(k), "discrimination", "referee", round(2 * cache * (1 + assumptions.reask_rate))))
        out.append((str(k), "generation", "generator", generator_draws(config, assumptions.acceptance)))
    out.append(("final", "imitation", "teacher", n if iterations else 0))
    return out + _evaluation(config, eval_questions, iterations + 2, assumptions)  # the base, every iteration's, the final


def _evaluation(config: RunConfig, eval_questions: int, checkpoints: int,
                assumptions: Assumptions) -> list[tuple[str, str, str, int]]:
    if not (config.evaluation.after_run and eval_questions):
        return []
    return [("evaluation", "evaluation", "reference", eval_questions),
            ("evaluation", "evaluation", "judge", round(2 * eval_questions * checkpoints * (1 + assumptions.reask_rate)))]


def cost(requests: int, prompt: float, completion: float, price: Price) -> float:
    return requests * (prompt * price.prompt_per_million + completion * price.completion_per_million) / 1e6


def minutes(requests: int, prompt: float, completion: float, role: ApiRole) -> float:
    if role.mode == "batch":
        return 0.0
    limits = role.rate_limits
    return max(requests / limits.requests_per_minute, requests * (prompt + completion) / limits.tokens_per_minute)


def make_plan(config: RunConfig, seeds: Sequence[dict[str, Any]], assumptions: Assumptions | None = None,
              eval_questions: int = 0, remaining: dict[tuple[str, str, str], int] | None = None,
              resumed_from: str | None = None, n_seeds: int | None = None) -> Plan:
    """The run's plan; for a resume, `remaining` holds what is known to be left of (iteration, stage,
    role): 0 for a committed stage, the requests the response store lacks for one under way. `n_seeds`:
    the run's seed count when `seeds` is a sample of them (the token means come from the sample)."""
    assumptions = assumptions or Assumptions()
    n_seeds = len(seeds) if n_seeds is None else n_seeds
    means = measure(seeds, config, assumptions)
    means.setdefault("reference", means["teacher"])
    means.setdefault("judge", means["referee"])
    rows = []
    for iteration, stage, role, requests in schedule(config, n_seeds, assumptions, eval_questions):
        requests = (remaining or {}).get((iteration, stage, role), requests)
        settings, m = role_config(config, role), means[role]
        rows.append(PlanRow(
            iteration=iteration, stage=stage, role=role, requests=requests,
            prompt_tokens=round(requests * m.prompt), completion_tokens=round(requests * m.completion),
            cost_usd=round(cost(requests, m.prompt, m.completion, settings.price), 6),
            batch_cost_usd=round(cost(requests, m.prompt, m.completion, settings.batch_price()), 6),
            minutes=round(minutes(requests, m.prompt, m.completion, settings), 2)))
    return Plan(seeds=n_seeds, iterations=config.loop.iterations, rows=rows,
                requests=sum(r.requests for r in rows), cost_usd=round(sum(r.cost_usd for r in rows), 2),
                batch_cost_usd=round(sum(r.batch_cost_usd for r in rows), 2),
                hours=round(sum(r.minutes for r in rows) / 60, 2), assumptions=assumptions, resumed_from=resumed_from)


def remaining_work(store: RunStore, config: RunConfig, responses: ResponseStore,
                   assumptions: Assumptions) -> dict[tuple[str, str, str], int]:
    """What a resume still has to ask, per (iteration, stage, role), where the run's files say: nothing
    for a committed stage; for the teacher's answers and the referee's first verdicts under way, the
    requests whose answers the response store does not hold. Stages not reached are left to the plan."""
    out: dict[tuple[str, str, str], int] = {}
    have = set(store.iterations())

    def missing(requests: list[ChatRequest], role: ApiRole) -> int:
        keys = [r.key(role.base_url, role.model) for r in requests]
        return len(keys) - len(responses.successes(keys))

    one_shot = config.loop.selection == "one_shot"  # rounds of generation, then the teacher on the whole Cache Pool
    for k in range(config.loop.iterations + 1):
        if k not in have:
            break
        it = str(k) if k < config.loop.iterations else "final"
        if one_shot and it != "final":
            if committed(store, k, "candidates"):
                out[(it, "generation", "generator")] = 0
            continue
        if committed(store, k, "teacher_answers_train"):
            out[(it, "imitation", "teacher")] = 0
        elif (train := committed(store, k, "cache_pool" if one_shot else "train_pool")) is not None:
            rows = store.read_pool(train).to_dict("records")
            out[(it, "imitation", "teacher")] = missing([answer_request(r, config.teacher.sampling) for r in rows],
                                                        config.teacher)
        if it == "final":
            break
        if committed(store, k, "judgments"):
            out[(it, "discrimination", "referee")] = 0
        elif (teacher := committed(store, k, "teacher_answers_cache")) and (student := committed(store, k, "student_answers")):
            cache = store.read_pool(store.ref(k, "cache_pool")).to_dict("records")
            items, _ = judge_items(store, cache, Judging(teacher=teacher, student=student))
            s, style = config.referee.sampling, config.referee.prompt_style
            first = [judge_request(i, tf, style, s.temperature, s.top_p, s.max_tokens) for i in items for tf in (True, False)
                     if i.student_answer.strip()]
            out[(it, "discrimination", "referee")] = round(missing(first, config.referee) * (1 + assumptions.reask_rate))
        if committed(store, k, "candidates"):
            out[(it, "generation", "generator")] = 0
    return out
