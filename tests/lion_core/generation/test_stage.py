from lion_core.config import parse_config
from lion_core.generation.stage import accepted_rows, generation_stage, update_pools
from lion_core.imitation.answers import ANSWERS_SCHEMA_VERSION, AnswerRow
from lion_core.llm import Endpoint, Gateway, ResponseStore
from lion_core.pools import make_row
from lion_core.rows import to_table
from lion_core.store import RunStore
from tests.helpers import judge_whole_pool, tiny_run


def test_update_pools_replaces_train_and_grows_cache_in_one_commit(tmp_path):
    cfg, store, res = tiny_run(tmp_path, n=4)
    seed_ids = [r["id"] for r in store.read_pool(res.cache_pool).to_dict("records")]
    new = [make_row("Invent a game for two players.", origin="hard", iteration=1, parent_id=seed_ids[0]),
           make_row("Describe a rare orchid species.", origin="easy", iteration=1, parent_id=seed_ids[1])]
    cand = res.train_pool  # stands in for the candidates artifact in lineage
    pools = update_pools(store, 0, res.cache_pool, new, cand)
    train, cache = pools.train_pool, pools.cache_pool
    t, c = store.read_pool(train), store.read_pool(cache)
    assert list(t["instruction"]) == ["Invent a game for two players.", "Describe a rare orchid species."]
    assert list(t["origin"]) == ["hard", "easy"] and list(t["parent_id"]) == seed_ids[:2] and set(t["iteration"]) == {1}
    assert len(c) == 6 and list(c["id"][:4]) == seed_ids and list(c["origin"]) == ["seed"] * 4 + ["hard", "easy"]
    m = store.manifest(1)
    assert set(m.files) == {"train_pool", "cache_pool"}
    assert [p["uri"] for p in m.files["cache_pool"].parents] == ["iter-0/cache_pool.parquet", "iter-0/train_pool.parquet"]
    assert store.iterations() == [0, 1]


def test_discrimination_then_generation_stage_over_the_store(tmp_path):
    from tests.lion_core.discrimination.test_judging import ScriptedReferee, lion_reply
    from tests.lion_core.generation.test_rounds import ScriptedGenerator, scripted_reply

    cfg, store, res = tiny_run(tmp_path, n=4)
    cfg = parse_config({**cfg.to_json_dict(), "loop": {**cfg.loop.model_dump(mode="json"), "new_instructions_per_iteration": 4}})
    store = RunStore(cfg.storage.runs_root, "r", cfg)
    pool = store.read_pool(res.cache_pool).to_dict("records")

    def answers(name, text, skip=()):
        rows = [AnswerRow(id=r["id"], instruction=r["instruction"], input=r["input"], answer=f"{text} {i}",
                          finish_reason="stop", status="ok", error=None) for i, r in enumerate(pool) if i not in skip]
        ref = store.write_table(0, name, to_table(rows, AnswerRow), schema_version=ANSWERS_SCHEMA_VERSION)
        store.commit(0, {name: ref})
        return ref

    teacher = answers("teacher_answers", "TEACHER")
    student = answers("student_answers", "STUDENT", skip={3})  # the student failed on the last item
    q = [r["instruction"] for r in pool]
    replies = {(q[0], True): [lion_reply(9, 3)], (q[0], False): [lion_reply(3, 9)],   # hard
               (q[1], True): [lion_reply(7, 7)], (q[1], False): [lion_reply(7, 7)],   # easy
               (q[2], True): [lion_reply(8, 8)], (q[2], False): [lion_reply(8, 8)]}   # easy
    with ResponseStore(str(tmp_path / "responses.sqlite")) as rs:
        with ScriptedReferee(replies) as ref_srv:
            gw = Gateway(Endpoint(role="referee", endpoint_id="ref", model="m", base_url=ref_srv.url, api_model="m",
                                  config=cfg.referee), rs)
            judgments, report = judge_whole_pool(store, 0, res.cache_pool, teacher, student, gw, cfg)
        labels = {r["instruction"]: r["label"] for r in store.read_table(judgments).to_pylist()}
        assert labels == {q[0]: "hard", q[1]: "easy", q[2]: "easy", q[3]: "missing_answer"}
        assert report.missing_answer == 1 and report.hard == 1 and report.easy == 2
        with ScriptedGenerator(scripted_reply) as gen_srv:
            gw = Gateway(Endpoint(role="generator", endpoint_id="gen", model="m", base_url=gen_srv.url, api_model="m",
                                  config=cfg.generator), rs)
            cands, gen_report = generation_stage(store, 0, res.cache_pool, judgments, gw, cfg)
    accepted = accepted_rows(store, cands, 1)
    assert gen_report.accepted == {"hard": 2, "easy": 2}
    assert {r["parent_id"] for r in accepted if r["origin"] == "hard"} == {pool[0]["id"]}
    assert {r["parent_id"] for r in accepted if r["origin"] == "easy"} <= {pool[1]["id"], pool[2]["id"]}
    assert store.ref(0, "candidates") == cands and cands.rows == gen_report.requests
    assert set(store.manifest(0).files) == {"train_pool", "cache_pool", "teacher_answers", "student_answers",
                                            "judgments", "candidates"}




def test_random_selection_draws_from_the_whole_cache_pool_whatever_the_referee_said(tmp_path):
    """The control of `loop.selection: random`: the same templates at the same ratio and the same number of
    requests as the adversarial run, its examples drawn from every Cache Pool item, hard, easy or unjudged."""
    from lion_core.discrimination.judging import JUDGMENTS_SCHEMA_VERSION, JudgmentRow
    from tests.lion_core.generation.test_rounds import ScriptedGenerator, scripted_reply

    cfg, store, res = tiny_run(tmp_path, n=12)
    pool = store.read_pool(res.cache_pool).to_dict("records")
    # the referee found one item hard and one easy; the rest it could not judge
    labels = ["hard", "easy"] + ["unresolved"] * 10
    rows = [JudgmentRow.unjudged(r["id"], r["instruction"], r["input"], lab, None) for r, lab in zip(pool, labels)]
    judgments = store.write_table(0, "judgments", to_table(rows, JudgmentRow), schema_version=JUDGMENTS_SCHEMA_VERSION)
    store.commit(0, {"judgments": judgments})
    drawn = {}
    with ResponseStore(str(tmp_path / "responses.sqlite")) as rs:
        for selection in ("adversarial", "random"):
            c = parse_config({**cfg.to_json_dict(), "loop": {**cfg.loop.model_dump(mode="json"), "selection": selection,
                                                            "new_instructions_per_iteration": 40}})
            with ScriptedGenerator(scripted_reply) as srv:
                gw = Gateway(Endpoint(role="generator", endpoint_id="gen", model="m", base_url=srv.url, api_model="m",
                                      config=c.generator), rs)
                from lion_core.generation.stage import generate_from

                drawn[selection] = generate_from(store, 0, res.cache_pool, judgments, gw, c)
    adv, rnd = drawn["adversarial"], drawn["random"]
    parents = {sel: {(cand.origin, cand.seed_id) for cand in d.candidates} for sel, d in drawn.items()}
    assert {p for _, p in parents["adversarial"]} == {pool[0]["id"], pool[1]["id"]}  # only what the referee found
    assert {p for _, p in parents["random"]} > {pool[0]["id"], pool[1]["id"]}  # anything in the pool
    assert {p for o, p in parents["random"] if o == "hard"} - {pool[0]["id"]}  # the hard template on any item
    # the same templates at the same ratio, the same number of new instructions and about as many requests
    assert adv.report.accepted == rnd.report.accepted == {"hard": 20, "easy": 20}
    assert abs(adv.report.requests - rnd.report.requests) <= 0.2 * adv.report.requests


def test_random_selection_keeps_the_adversarial_split_when_the_referee_found_no_hard_item(tmp_path):
    from lion_core.discrimination.judging import JUDGMENTS_SCHEMA_VERSION, JudgmentRow
    from lion_core.generation.stage import generate_from
    from tests.lion_core.generation.test_rounds import ScriptedGenerator, scripted_reply

    cfg, store, res = tiny_run(tmp_path, n=6)
    pool = store.read_pool(res.cache_pool).to_dict("records")
    rows = [JudgmentRow.unjudged(r["id"], r["instruction"], r["input"], "easy" if i < 2 else "unresolved", None)
            for i, r in enumerate(pool)]
    judgments = store.write_table(0, "judgments", to_table(rows, JudgmentRow), schema_version=JUDGMENTS_SCHEMA_VERSION)
    store.commit(0, {"judgments": judgments})
    accepted = {}
    with ResponseStore(str(tmp_path / "responses.sqlite")) as rs:
        for selection in ("adversarial", "random"):
            c = parse_config({**cfg.to_json_dict(), "loop": {**cfg.loop.model_dump(mode="json"), "selection": selection,
                                                            "new_instructions_per_iteration": 6}})
            with ScriptedGenerator(scripted_reply) as srv:
                gw = Gateway(Endpoint(role="generator", endpoint_id="gen", model="m", base_url=srv.url, api_model="m",
                                      config=c.generator), rs)
                accepted[selection] = generate_from(store, 0, res.cache_pool, judgments, gw, c).report.accepted
    assert accepted["adversarial"] == accepted["random"] == {"easy": 6}  # the easy template only, both
