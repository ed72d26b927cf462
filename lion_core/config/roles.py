"""The API roles: an OpenAI-compatible endpoint playing the teacher, the referee, the generator, or (under
`evaluation`) the reference and the judge; with each role's sampling, rate limits, retries, prices and
Batch API settings.

Where a role's API is, its key, how fast and how often it is called, what it costs and how requests are
delivered are operations (`OPERATION`): a resume may move a run to another endpoint, key or delivery mode.
The model, its sampling and the role's own settings are the run's identity.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from lion_core.config.base import OPERATION, NonNegFloat, PositiveInt, Section

EMBEDDED = "embedded"
"""`base_url` value that points a role at the embedded local endpoint (no key, no internet)."""
EMBEDDED_CHAT_MODEL = "smollm2-135m-instruct"
"""The embedded chat model (served by `transformers serve`)."""
STANDIN_REFEREE = "smollm2-likelihood-referee"
"""Offline referee stand-in: scores from the embedded model's likelihood of each answer (not an LLM judge)."""
STANDIN_GENERATOR = "smollm2-list-generator"
"""Offline generator stand-in: the embedded model continues a list of tasks that starts with the example."""
EMBEDDED_MODELS = (EMBEDDED_CHAT_MODEL, STANDIN_REFEREE, STANDIN_GENERATOR)

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_KEY_LIKE = re.compile(r"^(sk-|sk_|Bearer\s)", re.IGNORECASE)


class Sampling(Section):
    temperature: Annotated[float, Field(ge=0, le=2)] = 1.0
    """Sampling temperature of each request: 0 is (near) greedy, higher is more varied. Paper: teacher
    0.7, referee 0.2, generator 1.0."""
    top_p: Annotated[float, Field(gt=0, le=1)] = 1.0
    """Nucleus sampling: draw from the most likely tokens whose probabilities add up to this; 1 keeps all."""
    max_tokens: PositiveInt | None = None
    """Most tokens in a reply. None: the API's own limit, except the generator's, derived from the seed's
    length (`max_tokens_per_seed_word`). Paper: teacher 1024, referee 512."""


class RateLimits(Section):
    requests_per_minute: PositiveInt = 500
    """Requests per minute this role may send on its API key, all its shards in flight together (each
    paces itself at a share: `orchestration.shards_in_flight_per_key`)."""
    tokens_per_minute: PositiveInt = 200_000
    """Tokens per minute this role may spend on its key (each request counts its prompt estimate plus its
    max_tokens until the reply's usage is known), shared among its shards the same way."""
    max_concurrency: PositiveInt = 16
    """Most of this role's requests awaiting a reply at once, shared among its shards in flight."""
    adaptive: bool = True
    """Treat the two per-minute limits as ceilings and find what the provider really allows: start at them,
    cut the request rate (the token rate with it) by 15 % on a 429 or 'overloaded' reply, by half while it
    is still far too high, and win it back a little with each answer: quickly to just under where it was
    cut, slowly beyond. Never above these limits nor above the `x-ratelimit-limit-*` the provider's replies
    announce; never below a twentieth of them. The current level shows in the progress output and the log.
    Turn it off to pace exactly at these limits: when they are known to be right and yours alone, or when the
    endpoint answers 429 for reasons other than the rate (a proxy that sheds load at random), which would
    hold the role down."""


class RetryPolicy(Section):
    max_attempts: PositiveInt = 6
    """Attempts per request, the first included, on a retryable error (429, 5xx, timeout, dropped
    connection, malformed reply); then the request is recorded as failed."""
    initial_backoff_s: Annotated[float, Field(gt=0)] = 1.0
    """Seconds before the second attempt; doubled for each further one, jittered, up to max_backoff_s.
    A Retry-After header from the API takes precedence."""
    max_backoff_s: Annotated[float, Field(gt=0)] = 60.0
    """Longest wait between two attempts, in seconds (>= initial_backoff_s)."""
    request_timeout_s: Annotated[float, Field(gt=0)] = 120.0
    """Seconds one request may take before it is abandoned as a timeout (retryable)."""
    unreachable_after: PositiveInt = 8
    """Connection failures in a row (refused, reset, unresolvable; not timeouts) after which a batch stops
    sending: an endpoint that is down would otherwise cost every request all its attempts and backoffs.
    The batch fails as retryable; what was answered is kept and the rest is sent by the retry."""
    max_unusable_replies: PositiveInt = 2
    """Paid replies that cannot be used (an empty completion, or a finish reason in
    `invalid_finish_reasons`) one request may get in all: over its attempts, task retries and resumes.
    Then it is recorded as failed with the reason and not sent again, unless `lion run --resume RUN
    --retry-failed` asks for it (which grants it this many more)."""
    invalid_finish_reasons: tuple[str, ...] = ("content_filter",)
    """Finish reasons that make a reply unusable although it has text (a refusal by the provider's filter);
    add `length` where a reply cut off at max_tokens must not be kept. `stop` (a finished reply) may not be one."""
    outage_after: PositiveInt = 5
    """Server errors in a row (5xx, 503 overloaded, timeouts), across a batch's requests, after which the
    endpoint counts as down: the batch stops sending and probes with one request at a time, with a
    growing wait (initial_backoff_s doubled up to max_backoff_s), and the attempts spent meanwhile are not
    counted against the requests. The first answer ends the outage. Keep it below max_attempts: the run of
    errors is counted across requests, so it then always opens before a request has spent its attempts."""
    max_outage_s: Annotated[float, Field(gt=0)] = 1800.0
    """Seconds an outage may last before the run stops (cleanly: every answer received is kept, nothing is
    recorded as failed) with its own exit code, to be resumed with `lion run --resume` later."""

    @field_validator("invalid_finish_reasons")
    @classmethod
    def _finish_reasons(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if "stop" in v:
            raise ValueError("'stop' is how every finished reply ends: listed here, no reply could be used")
        if any(not r.strip() for r in v):
            raise ValueError("must not hold an empty finish reason")
        return v

    @model_validator(mode="after")
    def _backoff_order(self) -> RetryPolicy:
        if self.max_backoff_s < self.initial_backoff_s:
            raise ValueError("max_backoff_s must be >= initial_backoff_s")
        return self


class Price(Section):
    """US dollars per million tokens, for the cost column of the accounting table."""

    prompt_per_million: NonNegFloat = 0.0
    """US dollars per million prompt (input) tokens; 0: not costed."""
    completion_per_million: NonNegFloat = 0.0
    """US dollars per million completion (output) tokens; 0: not costed."""


class BatchSettings(Section):
    """How a role's requests go through the Batch API: a JSONL file of requests, answered within the
    completion window at the batch price, outside the per-minute limits (a role's `batch`, used with
    `mode: batch`)."""

    max_requests_per_batch: PositiveInt = 50_000
    """Requests in one batch file (OpenAI's limit: 50,000)."""
    max_bytes_per_batch: PositiveInt = 200 * 1024 * 1024
    """Bytes of one batch input file (OpenAI's limit: 200 MB)."""
    max_enqueued_tokens: PositiveInt = 2_000_000
    """Tokens (prompt estimate plus max_tokens) in this role's batches not yet finished, together; further
    batches are submitted as earlier ones finish. Set it to your account's enqueued-token limit for the model."""
    completion_window: Literal["24h"] = "24h"
    """The window the provider is given to answer a batch."""
    poll_interval_s: Annotated[float, Field(gt=0)] = 60.0
    """Seconds between two looks at the batches in progress; nothing is held while waiting."""
    max_attempts: PositiveInt = 3
    """Batches a request may go through (an error line, an expired or cancelled batch, a failed upload count
    one each) before `on_exhausted` applies."""
    on_exhausted: Literal["interactive", "fail"] = "interactive"
    """A request whose batch attempts are spent: ask it interactively (at the interactive price), or record
    it as failed."""
    price: Price | None = None
    """Token prices of batch requests; None: half of `price`, the usual batch discount."""


class ApiRole(Section):
    """One OpenAI-compatible endpoint playing a role (teacher, referee or generator)."""

    base_url: Annotated[str, OPERATION] = EMBEDDED
    """Base URL of an OpenAI-compatible chat API (`https://api.openai.com/v1`), or `embedded`: the local
    loopback server on the shipped SmolLM2 weights (no key, no internet)."""
    model: str = "smollm2-135m-instruct"
    """Model name sent to the API (paper: gpt-3.5-turbo). With `embedded`: smollm2-135m-instruct,
    smollm2-likelihood-referee or smollm2-list-generator."""
    api_key_env: Annotated[str | None, OPERATION] = None
    """Name of the environment variable that holds the key; the key itself never enters the config.
    None: no key (the embedded server, a keyless local one)."""
    sampling: Sampling = Sampling()
    """How this role's requests sample."""
    rate_limits: Annotated[RateLimits, OPERATION] = RateLimits()
    """This role's budget on its API key, kept by all runs and workers on the key together."""
    retry: Annotated[RetryPolicy, OPERATION] = RetryPolicy()
    """How failed requests are retried."""
    price: Annotated[Price, OPERATION] = Price()
    """Token prices, for the cost column of the accounting table."""
    context_overflow: Literal["fail", "truncate"] = "truncate"
    """On a context-length error: fail the request, or cut the longest message and ask once more."""
    truncate_keep_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.5
    """With context_overflow `truncate`: the fraction of the longest message's characters kept (its start)."""
    mode: Annotated[Literal["interactive", "batch"], OPERATION] = "interactive"
    """How this role's requests are delivered: `interactive` (one chat call each, paced by `rate_limits`) or
    `batch` (the provider's Batch API: JSONL files answered within 24 hours at the batch price, outside the
    per-minute limits; the flow waits between looks and holds nothing meanwhile). Answers land in the same
    response store either way, so a resume or a later iteration may switch modes without paying twice."""
    batch: Annotated[BatchSettings, OPERATION] = BatchSettings()
    """With `mode: batch`: file limits, the enqueued-token cap, polling, attempts and the batch price."""

    def batch_price(self) -> Price:
        """What a batch request costs: `batch.price`, or half of `price` (the usual batch discount)."""
        if self.batch.price is not None:
            return self.batch.price
        return Price(prompt_per_million=self.price.prompt_per_million / 2,
                     completion_per_million=self.price.completion_per_million / 2)

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str) -> str:
        if v != EMBEDDED and not re.match(r"^https?://[^\s/]+", v):
            raise ValueError(f"must be an http(s) URL or '{EMBEDDED}', got {v!r}")
        return v

    @field_validator("model")
    @classmethod
    def _model(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be empty")
        return v

    @model_validator(mode="after")
    def _embedded_model(self) -> ApiRole:
        if self.base_url == EMBEDDED and self.model not in EMBEDDED_MODELS:
            raise ValueError(f"model {self.model!r} is not embedded; with base_url '{EMBEDDED}' use one of "
                             f"{', '.join(EMBEDDED_MODELS)}")
        if self.base_url == EMBEDDED and self.mode == "batch":
            raise ValueError(f"mode 'batch' needs a provider with a Batch API (files and batches endpoints); the "
                             f"'{EMBEDDED}' server has none: use mode 'interactive' or a base_url that has one")
        return self

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if _KEY_LIKE.match(v) or (len(v) > 40 and not _ENV_NAME.match(v)):
            raise ValueError(
                "looks like an API key: put the key in the environment and give the variable's name here"
            )
        if not _ENV_NAME.match(v):
            raise ValueError(f"must be an environment variable name, got {v!r}")
        return v


class TeacherConfig(ApiRole):
    sampling: Sampling = Sampling(temperature=0.7, max_tokens=1024)
    """How the answers sample (the teacher's, the evaluation reference's). Paper: temperature 0.7, max_tokens 1024."""


class RefereeConfig(ApiRole):
    sampling: Sampling = Sampling(temperature=0.2, max_tokens=512)
    """How the judgments sample (the referee's, the evaluation judge's). Paper: temperature 0.2, max_tokens 512."""
    prompt_style: Literal["lion", "vicuna"] = "lion"
    """`lion`: explanation, then one score line per assistant; `vicuna`: both scores on the first line."""
    max_reasks: Annotated[int, Field(ge=0)] = 2
    """How many times an unparseable judgment is asked again before it is counted as unresolved."""


class GeneratorConfig(ApiRole):
    sampling: Sampling = Sampling(temperature=1.0, top_p=1.0, max_tokens=None)
    """How the generator's requests sample. Paper: temperature 1.0, top_p 1.0; max_tokens None derives
    it from the seed (`max_tokens_per_seed_word`)."""
    max_tokens_per_seed_word: PositiveInt = 4
    """max_tokens = this x the words of the whole rendered seed (instruction and input), kept within
    max_tokens_floor..max_tokens_ceiling. The official code counted the instruction's words only, so
    seeds with an input (38% of Alpaca) came back cut off; `sampling.max_tokens` overrides this rule."""
    max_tokens_floor: PositiveInt = 64
    """The least max_tokens a generator request gets (a short seed may still inspire a longer task)."""
    max_tokens_ceiling: PositiveInt = 1024
    """The most max_tokens a generator request gets (a very long seed input must not cost without bound)."""
    min_instruction_words: PositiveInt = 3
    """A generated instruction with fewer words is rejected (`too_short`)."""
    max_instruction_words: PositiveInt = 150
    """A generated instruction with more words is rejected (`too_long`); >= min_instruction_words."""
    request_budget_factor: Annotated[float, Field(ge=1)] = 3.0
    """Generator requests per iteration are capped at this x the number of new instructions wanted."""
    max_rounds: PositiveInt = 30
    """Most generation rounds per iteration; each round asks again for the instructions still missing
    (rejected candidates are replaced), within the request budget."""

    @model_validator(mode="after")
    def _word_bounds(self) -> GeneratorConfig:
        if self.max_instruction_words < self.min_instruction_words:
            raise ValueError("max_instruction_words must be >= min_instruction_words")
        if self.max_tokens_ceiling < self.max_tokens_floor:
            raise ValueError("max_tokens_ceiling must be >= max_tokens_floor")
        return self
