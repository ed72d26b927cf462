"""The run's identity is a contract with every run already made: pinned here, field by field and hash by hash."""

import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from lion_core.config import OPERATIONS, PATH_FIELDS, RunConfig, load_config, parse_config

REPO = Path(__file__).resolve().parents[3]

_ROLES = ("teacher", "referee", "generator", "evaluation.reference", "evaluation.judge")

# Written out, not derived: the markers on the fields must yield exactly these. Adding or removing one
# changes what a resume may change and the hash of every config that sets it.
PINNED_OPERATIONS = {
    *(f"{role}.{field}" for role in _ROLES
      for field in ("base_url", "api_key_env", "rate_limits", "retry", "price", "mode", "batch")),
    "training.timeout_s", "training.hostfile", "training.master_addr", "training.master_port",
    "training.multinode_launcher", "training.deepspeed_config", "evaluation.eval_set", "data.seed",
    "storage", "orchestration", "evaluation.output_root", "budget",
}
PINNED_PATH_FIELDS = {
    "data.seed", "training.deepspeed_config", "training.hostfile", "evaluation.eval_set", "evaluation.output_root",
    "storage.runs_root", "storage.response_store", "storage.checkpoints_root",
}

# A change here changes every run's identity: the hash keys every cached task and is written into every
# committed file, so the runs made before could no longer be resumed. Never update these to make a test pass.
PINNED_HASHES = {
    "embedded.yaml": "695a3d8d990e5270d76c1932818f6825ab8dd738589878a7eeb1f2441214d224",
    "openai.yaml": "d285208990f230f620991d0e32ef64d8c7875219acf9c7f283eaeb63587ce960",
    "vllm.yaml": "64a20965b126a2757c3c8dd40318edd894ebaecc577b8e480cda9e758207a68b",
}
DEFAULT_HASH = "709c3e69f7605363ca802e43d180bcd911b76dad1ca37d4321ceb88e76566c38"
LORA_HASH = "589aa9144e1987b4fe240883ff1d5a612a960e434d50ba34ddd6ffeb131d2253"


def _field(dotted: str):
    """The FieldInfo a dotted path names, walked through model_fields; KeyError when there is none."""
    model: type[BaseModel] | None = RunConfig
    info = None
    for name in dotted.split("."):
        if model is None:
            raise KeyError(f"{dotted}: {name} is under a value field")
        info = model.model_fields[name]
        model = next((a for a in (info.annotation, *typing.get_args(info.annotation))
                      if isinstance(a, type) and issubclass(a, BaseModel)), None)
    return info


def test_operations_and_path_fields_are_the_pinned_sets():
    assert len(OPERATIONS) == len(set(OPERATIONS)) and set(OPERATIONS) == PINNED_OPERATIONS
    assert len(PATH_FIELDS) == len(set(PATH_FIELDS)) and set(PATH_FIELDS) == PINNED_PATH_FIELDS


@pytest.mark.parametrize("dotted", sorted(PINNED_OPERATIONS | PINNED_PATH_FIELDS))
def test_every_pinned_entry_names_a_real_field(dotted):
    assert _field(dotted) is not None


def test_every_shipped_config_is_pinned():
    assert {p.name for p in (REPO / "configs").glob("*.yaml")} == set(PINNED_HASHES)


@pytest.mark.parametrize("name", sorted(PINNED_HASHES))
def test_shipped_config_hashes_are_unchanged(name):
    assert load_config(REPO / "configs" / name).config_hash() == PINNED_HASHES[name]


def test_default_and_lora_hashes_are_unchanged():
    assert RunConfig().config_hash() == DEFAULT_HASH
    assert parse_config({"training": {"method": "lora"}}).config_hash() == LORA_HASH


def test_evaluation_paths_resolve_against_the_config_folder(tmp_path):
    (tmp_path / "c.yaml").write_text("evaluation: {output_root: out, eval_set: q.jsonl}\nstorage: {runs_root: r}\n")
    cfg = load_config(tmp_path / "c.yaml")
    assert (cfg.evaluation.output_root, cfg.evaluation.eval_set, cfg.storage.runs_root) == (
        str(tmp_path / "out"), str(tmp_path / "q.jsonl"), str(tmp_path / "r"))


def test_the_random_control_is_another_run_and_the_paper_loop_keeps_its_hash():
    from lion_core.config import parse_config

    default = parse_config({}).config_hash()
    assert parse_config({"loop": {"selection": "adversarial"}}).config_hash() == default
    assert parse_config({"loop": {"selection": "random"}}).config_hash() != default
