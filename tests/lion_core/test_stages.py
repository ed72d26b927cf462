import json

from lion_core.config import parse_config
from lion_core.llm import Endpoint, Gateway, ResponseStore
from lion_core.pools import make_row
from lion_core.runs import init_run
from lion_core.stages import update_pools
from lion_core.store import RunStore, read_pool, read_table
from tests.fault_server import FaultPlan, FaultServer
from tests.helpers import answer_whole_pool, judge_whole_pool


def _setup(tmp_path, n=6):
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text("".join(json.dumps({"instruction": f"Describe item {i} in detail.", "input": ""}) + "\n" for i in range(n)))
    cfg = parse_config({"storage": {"runs_root": str(tmp_path / "runs")}})
    res = init_run(cfg, str(seeds), run_id="r")
    return cfg, RunStore(cfg.storage.runs_root, "r", cfg), res


def _gateway(url, store, cfg):
    role = cfg.teacher.model_copy(update={"base_url": url, "retry": cfg.teacher.retry.model_copy(
        update={"max_attempts": 2, "initial_backoff_s": 0.01})})
    return Gateway(Endpoint(role="teacher", endpoint_id="teacher-ep", model="m", base_url=url, api_model="m", config=role), store)


def test_teacher_answers_are_stored_and_never_asked_twice_across_iterations(tmp_path):
    cfg, store, res = _setup(tmp_path)
    with FaultServer() as srv, ResponseStore(str(tmp_path / "responses.sqlite")) as rs:
        gw = _gateway(srv.url, rs, cfg)
        ref = answer_whole_pool(store, 0, res.cache_pool, gw, "teacher_answers", "imitation")
        assert srv.stats.outcomes["ok"] == 6
        rows = read_table(ref).to_pylist()
        assert [r["status"] for r in rows] == ["ok"] * 6 and all(r["answer"].startswith("Answer to:") for r in rows)
        assert store.ref(0, "teacher_answers") == ref
        # next iteration: the cache pool grew by two; only the two new ones are asked
        new = [make_row(f"Brand new task {i} about rivers.", origin="hard", iteration=1, parent_id=rows[0]["id"])
               for i in range(2)]
        cache1 = update_pools(store, 0, res.cache_pool, new, ref).cache_pool
        answer_whole_pool(store, 1, cache1, gw, "teacher_answers", "imitation")
        assert srv.stats.outcomes["ok"] == 8
        assert max(srv.stats.successes.values()) == 1


def test_failed_answers_are_failures_not_empty_answers(tmp_path):
    cfg, store, res = _setup(tmp_path, n=3)
    with FaultServer(FaultPlan(rate_500=1.0)) as srv, ResponseStore(str(tmp_path / "responses.sqlite")) as rs:
        ref = answer_whole_pool(store, 0, res.train_pool, _gateway(srv.url, rs, cfg), "teacher_answers", "imitation")
    rows = read_table(ref).to_pylist()
    assert [r["status"] for r in rows] == ["failed"] * 3
    assert all(r["answer"] is None and r["error"].startswith("InternalServerError") for r in rows)


def test_update_pools_replaces_train_and_grows_cache_in_one_commit(tmp_path):
    cfg, store, res = _setup(tmp_path, n=4)
    seed_ids = [r["id"] for r in read_pool(res.cache_pool).to_dict("records")]
    new = [make_row("Invent a game for two players.", origin="hard", iteration=1, parent_id=seed_ids[0]),
           make_row("Describe a rare orchid species.", origin="easy", iteration=1, parent_id=seed_ids[1])]
    cand = res.train_pool  # stands in for the candidates artifact in lineage
    pools = update_pools(store, 0, res.cache_pool, new, cand)
    train, cache = pools.train_pool, pools.cache_pool
    t, c = read_pool(train), read_pool(cache)
    assert list(t["instruction"]) == ["Invent a game for two players.", "Describe a rare orchid species."]
    assert list(t["origin"]) == ["hard", "easy"] and list(t["parent_id"]) == seed_ids[:2] and set(t["iteration"]) == {1}
    assert len(c) == 6 and list(c["id"][:4]) == seed_ids and list(c["origin"]) == ["seed"] * 4 + ["hard", "easy"]
    m = store.manifest(1)
    assert set(m.files) == {"train_pool", "cache_pool"}
    assert [p["uri"] for p in m.files["cache_pool"].parents] == ["iter-0/cache_pool.parquet", "iter-0/train_pool.parquet"]
    assert store.iterations() == [0, 1]


def test_discrimination_then_generation_stage_over_the_store(tmp_path):
    import pyarrow as pa

    from lion_core.stages import ANSWERS_SCHEMA, ANSWERS_SCHEMA_VERSION, accepted_rows, generation_stage
    from tests.lion_core.test_generation import ScriptedGenerator, scripted_reply
    from tests.lion_core.test_referee import ScriptedReferee, lion_reply

    cfg, store, res = _setup(tmp_path, n=4)
    cfg = parse_config({**cfg.to_json_dict(), "loop": {**cfg.loop.model_dump(mode="json"), "new_instructions_per_iteration": 4}})
    store = RunStore(cfg.storage.runs_root, "r", cfg)
    pool = read_pool(res.cache_pool).to_dict("records")

    def answers(name, text, skip=()):
        rows = [{"id": r["id"], "instruction": r["instruction"], "input": r["input"], "answer": f"{text} {i}",
                 "finish_reason": "stop", "status": "ok", "error": None} for i, r in enumerate(pool) if i not in skip]
        ref = store.write_table(0, name, pa.Table.from_pylist(rows, schema=ANSWERS_SCHEMA), schema_version=ANSWERS_SCHEMA_VERSION)
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
        labels = {r["instruction"]: r["label"] for r in read_table(judgments).to_pylist()}
        assert labels == {q[0]: "hard", q[1]: "easy", q[2]: "easy", q[3]: "missing_answer"}
        assert report.missing_answer == 1 and report.hard == 1 and report.easy == 2
        with ScriptedGenerator(scripted_reply) as gen_srv:
            gw = Gateway(Endpoint(role="generator", endpoint_id="gen", model="m", base_url=gen_srv.url, api_model="m",
                                  config=cfg.generator), rs)
            cands, gen_report = generation_stage(store, 0, res.cache_pool, judgments, gw, cfg)
    accepted = accepted_rows(cands, 1)
    assert gen_report.accepted == {"hard": 2, "easy": 2}
    assert {r["parent_id"] for r in accepted if r["origin"] == "hard"} == {pool[0]["id"]}
    assert {r["parent_id"] for r in accepted if r["origin"] == "easy"} <= {pool[1]["id"], pool[2]["id"]}
    assert store.ref(0, "candidates") == cands and cands.rows == gen_report.requests
    assert set(store.manifest(0).files) == {"train_pool", "cache_pool", "teacher_answers", "student_answers",
                                            "judgments", "candidates"}


def test_imitation_inputs_previous_or_base(tmp_path):
    from lion_core.results import TrainingInputs
    from lion_core.stages import imitation_inputs

    cfg, store, res = _setup(tmp_path, n=3)
    with FaultServer() as srv, ResponseStore(str(tmp_path / "responses.sqlite")) as rs:
        gw = _gateway(srv.url, rs, cfg)
        a0 = answer_whole_pool(store, 0, res.train_pool, gw, "teacher_answers_train", "imitation")
        new = [make_row("Write a haiku about frost.", origin="easy", iteration=1, parent_id=None)]
        train1 = update_pools(store, 0, res.cache_pool, new, a0).train_pool
        a1 = answer_whole_pool(store, 1, train1, gw, "teacher_answers_train", "imitation")
    assert imitation_inputs(store, 0, cfg, "base-model", None) == TrainingInputs(start_from="base-model", answers=a0)
    assert imitation_inputs(store, 1, cfg, "base-model", "/ckpt/iter-0") == TrainingInputs(start_from="/ckpt/iter-0",
                                                                                          answers=a1)
    base_cfg = parse_config({**cfg.to_json_dict(), "training": {**cfg.training.model_dump(mode="json"), "init_from": "base"}})
    base_store = RunStore(cfg.storage.runs_root, "r", base_cfg)
    inputs = imitation_inputs(base_store, 1, base_cfg, "base-model", "/ckpt/iter-0")
    model, ref = inputs.start_from, inputs.answers
    assert model == "base-model" and ref.rows == 4
    assert {r["instruction"] for r in read_table(ref).to_pylist()} >= {"Write a haiku about frost."}
    assert base_store.ref(1, "train_answers_all") == ref
