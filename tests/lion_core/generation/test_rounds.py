import json
import random

import pytest

from lion_core.config import ApiRole, GeneratorConfig, LoopConfig, RateLimits, RetryPolicy
from lion_core.generation.candidates import Parsed, Rejected, generator_request, parse_candidate, split_quota
from lion_core.generation.rounds import generate
from lion_core.llm import Endpoint, Gateway, ResponseStore
from lion_core.pools import make_row
from lion_core.prompts import question_text
from tests.fault_server import FaultServer

CFG = GeneratorConfig()


@pytest.mark.parametrize("text,expected", [
    ("New task: Write a limerick about a lazy cat.\nNew input: none", Parsed("Write a limerick about a lazy cat.", "")),
    ("New task: Summarise the review below in one line.\nNew input: The soup was cold but the bread was great.",
     Parsed("Summarise the review below in one line.", "The soup was cold but the bread was great.")),
    ("  **New task:** List three uses of vinegar at home.\n**New input:** <noinput>\n",
     Parsed("List three uses of vinegar at home.", "")),
    ("new task: Sort these words by length.\nnew input:\napple\nfig\nbanana",
     Parsed("Sort these words by length.", "apple\nfig\nbanana")),
    ("Sure! Here it is.\nNew task: Explain why leaves change colour in autumn.",
     Parsed("Explain why leaves change colour in autumn.", "")),
])
def test_parse_good_candidates(text, expected):
    assert parse_candidate(text, "stop", CFG) == expected


@pytest.mark.parametrize("text,finish,reason", [
    ("New task: Write a poem about", "length", "truncated"),
    ("", "stop", "empty"),
    (None, "stop", "empty"),
    ("New task:\nNew input: none", "stop", "empty"),
    ("Here is a good task for you.", "stop", "unparseable"),
    ("I'm sorry, but I can't help with that.", "stop", "refusal"),
    ("New task: As an AI, I cannot write tasks.", "stop", "refusal"),
    ("New task: Name it.", "stop", "too_short"),
    ("New task: " + "word " * 200, "stop", "too_long"),
    ("New task: Rewrite the <<<EXAMPLE TASK>>> in your own words please.", "stop", "leaked_markers"),
    ("New task: Write a story about a dragon.\nNew input: ### Response: once upon", "stop", "leaked_markers"),
])
def test_parse_rejections(text, finish, reason):
    assert parse_candidate(text, finish, CFG) == Rejected(reason)


def _loop(n_new, seed=0):
    """The generation settings of these tests: n_new new instructions, 1:1 hard/easy, ROUGE-L 0.7."""
    return LoopConfig(new_instructions_per_iteration=n_new, hard_easy_ratio=(1, 1), rouge_l_threshold=0.7, random_seed=seed)


def test_max_tokens_from_the_whole_seed_within_floor_and_ceiling():
    seed = {"id": "s", "instruction": "Give three tips for staying healthy.", "input": ""}
    with_input = {"id": "t", "instruction": "Summarize the text.",
                  "input": "The city council met on Monday to discuss the new budget for public parks, " * 3}
    assert generator_request(seed, "hard", CFG, 0, 0).max_tokens == 64  # 4 x 6 words, raised to the floor
    assert generator_request(seed, "easy", CFG.model_copy(update={"max_tokens_per_seed_word": 20}), 0, 0).max_tokens == 120
    words = len(with_input["instruction"].split()) + len(with_input["input"].split())
    assert generator_request(with_input, "hard", CFG, 0, 0).max_tokens == 4 * words  # the input counts
    assert generator_request(with_input, "hard", CFG.model_copy(update={"max_tokens_ceiling": 100}), 0, 0).max_tokens == 100
    hard, easy = generator_request(seed, "hard", CFG, 0, 0), generator_request(seed, "easy", CFG, 0, 0)
    assert "same domain and is the same kind" in hard.messages[0][1] and "rarer" in easy.messages[0][1]


def _tokens(text):
    return -(-len(text) // 4)  # about 4 characters a token, the usual rule for English


def _echo_length_reply(seed, kind, n, req):
    """A generator whose new task is as long as its example (instruction and input: its own words,
    reshuffled), cut off at max_tokens like a real endpoint: the shape the official budget truncates."""
    instruction, _, input_text = seed.partition("\n\n")
    rng = random.Random(f"{seed}:{n}")
    task = rng.sample(instruction.split(), len(instruction.split())) + [f"variant{n}"]
    new_input = rng.sample(input_text.split(), len(input_text.split())) if input_text.strip() else ["none"]
    text = "New task: " + " ".join(task).rstrip(".") + ".\nNew input: " + " ".join(new_input)
    if _tokens(text) > req["max_tokens"]:
        return text[:4 * req["max_tokens"]], "length"
    return text, "stop"


def test_seeds_with_an_input_are_no_longer_cut_off(tmp_path, shared_data):
    import pandas as pd

    alpaca = pd.read_parquet(shared_data / "stanford_alpaca" / "alpaca_data_52k_en_via_open-chinese.parquet")
    sample = alpaca.sample(400, random_state=0)
    seeds = [make_row(r.instruction, r.input, origin="seed", iteration=0) for r in sample.itertuples()]
    with_input = [s for s in seeds if s["input"].strip()]
    assert 0.3 < len(with_input) / len(seeds) < 0.45  # Alpaca: about 38% of seeds carry an input
    # The official budget (4 x the instruction's words) is shorter than this reply for many of them ...
    official = sum(_tokens(_echo_length_reply(question_text(s["instruction"], s["input"]), "hard", 0,
                                              {"max_tokens": 10**6})[0]) > 4 * len(s["instruction"].split())
                   for s in with_input)
    assert official / len(with_input) > 0.2  # 45 of 164 here
    # ... while ours truncates none of them, and tasks from seeds with an input are accepted.
    with ScriptedGenerator(_echo_length_reply) as srv, ResponseStore(str(tmp_path / "r.sqlite")) as store:
        res = generate(_gateway(srv.url, store), hard_seeds=with_input[:60], easy_seeds=seeds[200:260], cache_pool=seeds,
                       next_iteration=1, loop=_loop(40, seed=0),
                       cfg=CFG.model_copy(update={"max_instruction_words": 400}))
    rep = res.report
    assert rep.rejected_by_reason.get("truncated", 0) == 0 and rep.truncated_by_reason == {}
    assert rep.by_seed_input["with_input"].accepted >= 20
    assert any(r["input"] for r in res.accepted)  # the input of a new task survives


def test_truncations_are_counted_by_reason(tmp_path):
    seeds = [make_row("Summarize the following text for a child.", "word " * 60, origin="seed", iteration=0),
             make_row("Name three birds that live in cold places.", origin="seed", iteration=0)]
    cfg = CFG.model_copy(update={"max_tokens_ceiling": 80, "max_instruction_words": 400})
    with ScriptedGenerator(_echo_length_reply) as srv, ResponseStore(str(tmp_path / "r.sqlite")) as store:
        res = generate(_gateway(srv.url, store), hard_seeds=seeds[:1], easy_seeds=seeds[1:], cache_pool=seeds,
                       next_iteration=1, loop=_loop(4, seed=0),
                       cfg=cfg.model_copy(update={"request_budget_factor": 1.0}))
    rep = res.report
    assert rep.truncated_by_reason == {"at_ceiling": 2}  # the long seed's budget hit the ceiling, twice
    assert {k: v.model_dump() for k, v in rep.by_seed_input.items()} == {
        "with_input": {"requests": 2, "truncated": 2, "accepted": 0},
        "without_input": {"requests": 2, "truncated": 0, "accepted": 2}}
    assert all(c.max_tokens == 80 for c in res.candidates if c.seed_has_input)


def test_each_iteration_draws_afresh_and_a_rerun_pays_for_nothing(tmp_path):
    seed = [make_row("Invent a board game for two players.", origin="seed", iteration=0)]
    kwargs = dict(hard_seeds=seed, easy_seeds=[], cache_pool=seed, loop=_loop(2, seed=3),
                  cfg=CFG.model_copy(update={"request_budget_factor": 1.0}))
    with ScriptedGenerator(scripted_reply) as srv, ResponseStore(str(tmp_path / "r.sqlite")) as store:
        first = generate(_gateway(srv.url, store), next_iteration=1, **kwargs)
        assert srv.calls == 2 and first.report.fresh_draws == 2
        later = generate(_gateway(srv.url, store), next_iteration=2, **kwargs)
        assert srv.calls == 4  # the same seed, prompt and sample index in another iteration: asked again
        assert later.report.fresh_draws == 2 and later.report.stored_draws == 0
        again = generate(_gateway(srv.url, store), next_iteration=2, **kwargs)
        assert srv.calls == 4  # a resume of the same iteration reuses its stored replies
        assert again.report.stored_draws == 2
    assert [c.raw for c in again.candidates] == [c.raw for c in later.candidates]


def test_split_quota():
    assert split_quota(10, (1, 1), 5, 5) == (5, 5)
    assert split_quota(9, (2, 1), 5, 5) == (6, 3)
    assert split_quota(10, (1, 1), 0, 5) == (0, 10)
    assert split_quota(10, (1, 1), 5, 0) == (10, 0)
    assert split_quota(10, (1, 1), 0, 0) == (0, 0)


class ScriptedGenerator(FaultServer):
    """Answers generator prompts from a list of replies, one per request, in arrival order per seed."""

    def __init__(self, reply_for):
        super().__init__()
        self.reply_for = reply_for
        self.calls = 0

    async def _respond(self, method, path, headers, body, writer):
        req = json.loads(body)
        prompt = req["messages"][-1]["content"]
        seed = prompt.split("<<<EXAMPLE TASK>>>\n", 1)[1].split("\n<<<END", 1)[0]
        kind = "hard" if "same kind" in prompt else "easy"
        self.calls += 1
        text, finish = self.reply_for(seed, kind, self.calls, req)
        payload = {"id": "x", "object": "chat.completion", "created": 0, "model": "m",
                   "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
                   "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20}}
        await self.send(writer, 200, json.dumps(payload).encode())
        return True


def _gateway(url, store):
    cfg = ApiRole(base_url=url, model="m", rate_limits=RateLimits(requests_per_minute=60000),
                  retry=RetryPolicy(max_attempts=2, initial_backoff_s=0.01))
    return Gateway(Endpoint(role="generator", endpoint_id="gen", model="m", base_url=url, api_model="m", config=cfg), store)


VOCAB = [f"term{i}" for i in range(300)]


def scripted_reply(seed, kind, n, req):
    # a new, distinct task per call; every 5th is a copy of its seed; every 7th is truncated
    if n % 7 == 0:
        return "New task: Write a story about", "length"
    if n % 5 == 0:
        return f"New task: {seed}", "stop"
    words = " ".join(random.Random(n).sample(VOCAB, 8))
    return f"New task: Explain {words}.\nNew input: none", "stop"


def _pool():
    rows = [make_row(f"Explain the main idea of topic number {i} to a child.", origin="seed", iteration=0) for i in range(6)]
    return rows[:3], rows[3:], rows


def test_generate_reaches_the_target_with_recorded_reasons(tmp_path):
    hard, easy, pool = _pool()
    with ScriptedGenerator(scripted_reply) as srv, ResponseStore(str(tmp_path / "r.sqlite")) as store:
        res = generate(_gateway(srv.url, store), hard_seeds=hard, easy_seeds=easy, cache_pool=pool, next_iteration=1,
                       loop=_loop(10, seed=0), cfg=CFG)
    rep = res.report
    assert rep.outcome == "target reached" and rep.accepted == {"hard": 5, "easy": 5}
    assert len(res.accepted) == 10
    assert {r["origin"] for r in res.accepted} == {"hard", "easy"} and {r["iteration"] for r in res.accepted} == {1}
    seed_ids = {r["id"] for r in pool}
    assert all(r["parent_id"] in seed_ids for r in res.accepted)
    reasons = rep.rejected_by_reason
    assert reasons.get("truncated", 0) >= 1 and reasons.get("rouge_l", 0) + reasons.get("duplicate", 0) >= 1
    assert len(res.candidates) == rep.requests
    for c in res.candidates:
        assert (c.status == "accepted") == (c.reason is None)


def test_generate_stops_at_the_request_budget(tmp_path):
    hard, easy, pool = _pool()
    with ScriptedGenerator(lambda s, k, n, r: ("I'm sorry, I cannot do that.", "stop")) as srv, \
            ResponseStore(str(tmp_path / "r.sqlite")) as store:
        res = generate(_gateway(srv.url, store), hard_seeds=hard, easy_seeds=easy, cache_pool=pool, next_iteration=1,
                       loop=_loop(4, seed=0),
                       cfg=CFG.model_copy(update={"request_budget_factor": 2.5}))
        assert srv.calls == 10
    assert res.accepted == [] and res.report.outcome == "request budget spent"
    assert res.report.requests == 10 and res.report.rejected_by_reason == {"refusal": 10}


def test_hard_and_easy_candidates_are_filtered_against_each_other(tmp_path):
    hard, easy, pool = _pool()

    def same_task(seed, kind, n, req):
        return "New task: Compose a cheerful song about morning coffee and friends.", "stop"

    with ScriptedGenerator(same_task) as srv, ResponseStore(str(tmp_path / "r.sqlite")) as store:
        res = generate(_gateway(srv.url, store), hard_seeds=hard, easy_seeds=easy, cache_pool=pool, next_iteration=1,
                       loop=_loop(2, seed=0),
                       cfg=CFG.model_copy(update={"request_budget_factor": 1.0}))
    assert len(res.accepted) == 1
    assert res.report.rejected_by_reason == {"duplicate": 1}


def test_a_rerun_asks_the_same_requests_and_pays_for_none(tmp_path):
    hard, easy, pool = _pool()
    kwargs = dict(hard_seeds=hard, easy_seeds=easy, cache_pool=pool, next_iteration=1, loop=_loop(8, seed=3), cfg=CFG)
    with ScriptedGenerator(scripted_reply) as srv, ResponseStore(str(tmp_path / "r.sqlite")) as store:
        first = generate(_gateway(srv.url, store), **kwargs)
        calls = srv.calls
        second = generate(_gateway(srv.url, store), **kwargs)
        assert srv.calls == calls
    assert [r["id"] for r in first.accepted] == [r["id"] for r in second.accepted]


def test_no_seeds_is_reported_not_called_success(tmp_path):
    with ResponseStore(str(tmp_path / "r.sqlite")) as store:
        res = generate(_gateway("http://127.0.0.1:9/v1", store), hard_seeds=[], easy_seeds=[], cache_pool=[],
                       next_iteration=1, loop=_loop(5, seed=0), cfg=CFG)
    assert res.accepted == [] and res.report.outcome.startswith("no seeds") and res.report.requests == 0
