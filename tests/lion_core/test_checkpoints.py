"""Checkpoint records, carrying a checkpoint over an empty Train Pool, the final publication, model cards."""

import json
import os

import pytest

from lion_core import checkpoints as ck
from lion_core.config import parse_config
from lion_core.errors import StoreError
from lion_core.runs import init_run
from lion_core.store import RunStore


@pytest.fixture
def run(tmp_path):
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text("".join(json.dumps({"instruction": f"Write a note about topic {i}.", "input": ""}) + "\n"
                             for i in range(4)))
    cfg = parse_config({"storage": {"runs_root": str(tmp_path / "runs")}, "data": {"seed": str(seeds)}})
    init_run(cfg, run_id="r")
    return cfg, RunStore(cfg.storage.runs_root, "r", cfg)


def test_the_next_iteration_starts_from_the_recorded_checkpoint_even_when_it_was_carried(run):
    cfg, store = run
    iter0 = "run://r/checkpoints/iter-0/final"  # inside the run: valid wherever the run folder goes
    assert store.resolve(iter0) == os.path.join(cfg.storage.checkpoint_dir("r", 0), "final")
    assert ck.previous_checkpoint(store, cfg, 0) is None
    ck.record_checkpoint(store, 0, cfg, trained=True, train_rows=4)
    assert ck.previous_checkpoint(store, cfg, 1) == iter0
    # iteration 1 had nothing to train on: it carries iteration 0's checkpoint, and says why
    assert ck.carried_from(store, 1) == 0
    ck.record_checkpoint(store, 1, cfg, trained=False, train_rows=0)
    assert "checkpoint" in store.manifest(1).files  # recorded in the iteration's manifest
    assert ck.checkpoint_record(store, 1).model_dump() == {"status": "carried", "source_iteration": 0,
                                              "reason": ck.EMPTY_TRAIN_POOL, "train_rows": 0, "path": iter0}
    # iteration 2 starts from what iteration 1 ended with, never from a folder iteration 1 never wrote
    assert ck.previous_checkpoint(store, cfg, 2) == iter0
    ck.record_checkpoint(store, 2, cfg, trained=False, train_rows=0)
    assert ck.checkpoint_record(store, 2).source_iteration == 0  # carried twice: still iteration 0's
    assert [r.get("checkpoint") for r in ck.lineage(store, 2)] == ["trained", "carried (from iteration 0)",
                                                                    "carried (from iteration 0)"]
    # paths come from the config when read: checkpoints moved to another root are found there
    moved = parse_config({**cfg.to_json_dict(), "storage": {**cfg.storage.model_dump(), "checkpoints_root": "/mnt/ckpt"}})
    assert ck.previous_checkpoint(store, moved, 3) == "/mnt/ckpt/r/iter-0/final"


def test_nothing_to_carry_is_an_error(run):
    cfg, store = run
    with pytest.raises(StoreError, match="no earlier checkpoint"):
        ck.record_checkpoint(store, 0, cfg, trained=False, train_rows=0)


def test_runs_without_records_fall_back_to_the_trained_folder(run):
    cfg, store = run
    assert store.resolve(ck.previous_checkpoint(store, cfg, 1)) == os.path.join(cfg.storage.checkpoint_dir("r", 0), "final")


def test_publish_final_is_complete_or_absent_and_links_the_weights(tmp_path):
    src = tmp_path / "iter-2" / "final"
    src.mkdir(parents=True)
    (src / "model.safetensors").write_bytes(b"weights" * 100)
    (src / "config.json").write_text("{}")
    (src / ck.COMPLETE).write_text("ok\n")
    (src / ck.CARD).write_text("iteration 2's card")
    final = tmp_path / "final"
    (tmp_path / "final.partial").mkdir()  # left by a crash in an earlier attempt
    info = {"status": "trained", "iteration": 2, "source_iteration": 2, "train_rows": 7}
    out = ck.publish_final(src, final, info=info)
    assert out == final and not (tmp_path / "final.partial").exists()
    assert (final / "model.safetensors").read_bytes() == (src / "model.safetensors").read_bytes()
    assert os.stat(final / "model.safetensors").st_ino == os.stat(src / "model.safetensors").st_ino  # a hard link
    assert not ck.final_is_complete(final) and not (final / ck.CARD).exists()  # its own card and marker come next
    ck.mark_complete(final)
    assert ck.is_current_final(final, 2) and not ck.is_current_final(final, 3)
    found = ck.read_final_info(final)
    assert found["status"] == "trained" and found["source"] == str(src)
    assert "trained on the final Train Pool of iteration 2: 7 teacher answers" in ck.final_text(final, found)
    # the run was extended: the final checkpoint is replaced by the new last one
    newer = tmp_path / "iter-3" / "final"
    newer.mkdir(parents=True)
    (newer / "model.safetensors").write_bytes(b"better" * 100)
    ck.publish_final(newer, final, info={**info, "iteration": 3, "source_iteration": 3})
    assert (final / "model.safetensors").read_bytes() == b"better" * 100 and not ck.final_is_complete(final)
    assert not (tmp_path / "final.old").exists()


def test_model_card_lineage_settings_and_scores(run):
    cfg, store = run
    ref = store.ref(0, "train_pool")
    ck.record_checkpoint(store, 0, cfg, trained=True, train_rows=4)
    card = ck.model_card(title="Lion student, run r, iteration 0", config=cfg, base_model="embedded:smollm2-135m-instruct",
                         start_from="/base", run_id="r", trained_on=ref, lineage_rows=ck.lineage(store, 0))
    assert card.startswith("---\nlibrary_name: transformers")  # a base that is not a Hub id is not claimed as one
    assert "base model `embedded:smollm2-135m-instruct`" in card
    assert "| 0 | 4 | 4 | - | trained |" in card and cfg.config_hash() in card and "learning rate 2e-05" in card
    assert "Not evaluated yet" in card
    scored = ck.with_scores(card, {"eval-1": {"relative_score": 0.8123, "wins": 3, "ties": 1, "losses": 2}})
    assert "| eval-1 | 81.2% | 3 / 1 / 2 |" in scored and "Not evaluated yet" not in scored
    assert scored.split("## Evaluation")[0] == card.split("## Evaluation")[0]


def test_evaluations_add_their_scores_to_a_lion_card_only(tmp_path):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    assert not ck.add_scores_to_card(folder, "e1", {"relative_score": 0.5})  # no card: not a Lion checkpoint
    (folder / ck.CARD).write_text("# Someone's model\n\nTheir own README.\n")
    assert not ck.add_scores_to_card(folder, "e1", {"relative_score": 0.5})  # a README, but not a Lion checkpoint
    assert (folder / ck.CARD).read_text() == "# Someone's model\n\nTheir own README.\n"
    (folder / "lion_checkpoint.json").write_text("{}")
    ck.write_card(folder, "# card\n\n## Evaluation\n\nNot evaluated yet.\n")
    assert ck.add_scores_to_card(folder, "e1", {"relative_score": 0.5, "wins": 1, "ties": 0, "losses": 1})
    assert ck.add_scores_to_card(folder, "e2", {"relative_score": 0.75, "wins": 2, "ties": 0, "losses": 0})
    text = (folder / ck.CARD).read_text()
    assert "| e1 | 50.0% | 1 / 0 / 1 |" in text and "| e2 | 75.0% | 2 / 0 / 0 |" in text
