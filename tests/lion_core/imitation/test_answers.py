from lion_core.generation.stage import update_pools
from lion_core.llm import ResponseStore
from lion_core.pools import make_row
from tests.fault_server import FaultPlan, FaultServer
from tests.helpers import answer_whole_pool, teacher_gateway, tiny_run


def test_teacher_answers_are_stored_and_never_asked_twice_across_iterations(tmp_path):
    cfg, store, res = tiny_run(tmp_path)
    with FaultServer() as srv, ResponseStore(str(tmp_path / "responses.sqlite")) as rs:
        gw = teacher_gateway(srv.url, rs, cfg)
        ref = answer_whole_pool(store, 0, res.cache_pool, gw, "teacher_answers", "imitation")
        assert srv.stats.outcomes["ok"] == 6
        rows = store.read_table(ref).to_pylist()
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
    cfg, store, res = tiny_run(tmp_path, n=3)
    with FaultServer(FaultPlan(rate_500=1.0)) as srv, ResponseStore(str(tmp_path / "responses.sqlite")) as rs:
        ref = answer_whole_pool(store, 0, res.train_pool, teacher_gateway(srv.url, rs, cfg), "teacher_answers", "imitation")
    rows = store.read_table(ref).to_pylist()
    assert [r["status"] for r in rows] == ["failed"] * 3
    assert all(r["answer"] is None and r["error"].startswith("InternalServerError") for r in rows)
