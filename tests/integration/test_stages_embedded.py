"""One small discrimination and generation round against the real embedded endpoint."""

import json

import pyarrow as pa
import pytest

from lion_core.config import load_config, parse_config
from lion_core.generation.rounds import generate
from lion_core.generation.stage import update_pools
from lion_core.imitation.answers import ANSWERS_SCHEMA, ANSWERS_SCHEMA_VERSION
from lion_core.llm import ChatRequest, Endpoint, Gateway, ResponseStore
from lion_core.runs import init_run
from lion_core.store import RunStore
from tests.helpers import answer_whole_pool, judge_whole_pool

pytestmark = pytest.mark.slow


def test_discrimination_and_generation_round(endpoints, tmp_path, repo):
    data = load_config(repo / "configs" / "embedded.yaml").to_json_dict()
    data["storage"]["runs_root"] = str(tmp_path / "runs")
    data["teacher"]["sampling"]["max_tokens"] = 40
    data["referee"]["sampling"]["max_tokens"] = 80
    data["referee"]["max_reasks"] = 1
    data["loop"]["new_instructions_per_iteration"] = 4
    data["generator"]["request_budget_factor"] = 2.0
    cfg = parse_config(data)
    seeds = tmp_path / "seeds.jsonl"
    lines = [json.loads(x) for x in (repo / "data" / "demo_seeds.jsonl").read_text().splitlines()[:4]]
    seeds.write_text("".join(json.dumps(x) + "\n" for x in lines))
    run = init_run(cfg, str(seeds), run_id="e2e")
    store = RunStore(cfg.storage.runs_root, "e2e", cfg)
    with ResponseStore(str(tmp_path / "responses.sqlite")) as rs:
        gw = {role: Gateway(Endpoint.from_config(role, getattr(cfg, role), embedded=endpoints), rs)
              for role in ("teacher", "referee", "generator")}
        teacher = answer_whole_pool(store, 0, run.cache_pool, gw["teacher"], "teacher_answers", "imitation")
        # the student's answers come from the student stage; here the embedded model answers in its place
        pool = store.read_pool(run.cache_pool).to_dict("records")
        reqs = [ChatRequest.of([("user", r["instruction"])], temperature=0.7, max_tokens=40, tag=r["id"]) for r in pool]
        answers = gw["teacher"].run_sync(reqs, "student-stand-in")
        table = pa.Table.from_pylist([{"id": r["id"], "instruction": r["instruction"], "input": r["input"], "answer": a.text,
                                       "finish_reason": a.finish_reason, "status": "ok" if a.ok else "failed",
                                       "error": None} for r, a in zip(pool, answers)], schema=ANSWERS_SCHEMA)
        student = store.write_table(0, "student_answers", table, schema_version=ANSWERS_SCHEMA_VERSION)
        store.commit(0, {"student_answers": student})

        judgments, report = judge_whole_pool(store, 0, run.cache_pool, teacher, student, gw["referee"], cfg)
        rows = store.read_table(judgments).to_pylist()
        assert len(rows) == 4 and {r["label"] for r in rows} <= {"hard", "easy", "unresolved"}
        for r in rows:
            assert r["raw_t_first"] and r["raw_s_first"]  # the referee's own words are kept
            if r["label"] == "unresolved":
                assert r["d"] is None  # never scored
            else:
                assert r["d"] == r["mean_t"] - r["mean_s"]
        assert report.resolved + report.unresolved == 4
        assert report.unresolved == 0  # the offline referee stand-in always gives a verdict
        assert 0.0 <= report.coverage_teacher_first <= 1.0

        result = generate(gw["generator"], hard_seeds=pool[:2], easy_seeds=pool[2:], cache_pool=pool, next_iteration=1,
                          loop=cfg.loop.model_copy(update={"random_seed": 0}), cfg=cfg.generator)
        assert result.report.requests <= 8
        assert len(result.candidates) == result.report.requests
        for c in result.candidates:
            assert c.raw is not None
            assert (c.status == "accepted") == (c.reason is None)
        assert result.accepted  # the list generator's tasks pass the parser and the ROUGE-L filter
        pools = update_pools(store, 0, run.cache_pool, result.accepted, teacher)
        train, cache = pools.train_pool, pools.cache_pool
        assert train.rows == len(result.accepted) and cache.rows == 4 + len(result.accepted)
