"""What a fine-tune starts from and trains on: the previous checkpoint on this iteration's answers, or
the base model on every Train Pool's answers so far (`training.init_from`)."""

from lion_core.config import parse_config
from lion_core.generation.stage import update_pools
from lion_core.imitation.training_set import imitation_inputs
from lion_core.llm import ResponseStore
from lion_core.pools import make_row
from lion_core.results import TrainingInputs
from lion_core.store import RunStore
from tests.fault_server import FaultServer
from tests.helpers import answer_whole_pool, teacher_gateway, tiny_run


def test_imitation_inputs_previous_or_base(tmp_path):
    cfg, store, res = tiny_run(tmp_path, n=3)
    with FaultServer() as srv, ResponseStore(str(tmp_path / "responses.sqlite")) as rs:
        gw = teacher_gateway(srv.url, rs, cfg)
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
    assert {r["instruction"] for r in store.read_table(ref).to_pylist()} >= {"Write a haiku about frost."}
    assert base_store.ref(1, "train_answers_all") == ref
