"""The student's fine-tune on CPU through real launchers and real DeepSpeed, with a tiny model."""

import json
from pathlib import Path

import pyarrow as pa
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from lion_core.config import parse_config
from lion_core.imitation.answers import ANSWERS_SCHEMA, ANSWERS_SCHEMA_VERSION
from lion_core.llm.embedded import free_port as launch_free_port
from lion_core.prompts import student_prompt
from lion_core.store import RunStore
from lion_core.student import launch
from lion_core.student.launch import TrainOptions, train_student
from lion_core.student.models import checkpoint_info
from lion_core.student.train import COMPLETE

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def answers(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    cfg = parse_config({"storage": {"runs_root": str(root)}})
    store = RunStore(str(root), "t", cfg)
    rows = [{"id": f"{i:016x}", "instruction": f"Name {i + 2} colours.", "input": "" if i % 2 else "in English",
             "answer": " ".join(["red", "green", "blue", "yellow", "purple"][: (i % 5) + 1]) * (1 + i % 3),
             "finish_reason": "stop", "status": "ok", "error": None} for i in range(24)]
    rows.append({**rows[0], "id": "f" * 16, "answer": None, "status": "failed", "error": "x"})  # never trained on
    ref = store.write_table(0, "teacher_answers", pa.Table.from_pylist(rows, schema=ANSWERS_SCHEMA),
                            schema_version=ANSWERS_SCHEMA_VERSION)
    # By location, not `run://`: the tests' configs put their runs elsewhere, and a reference resolves
    # under the config's runs root.
    return ref.model_copy(update={"uri": store.resolve(ref.uri)})


def _config(tmp_path, **training):
    return parse_config({
        "storage": {"runs_root": str(tmp_path)},
        "student": {"prompt_format": "alpaca"},
        "training": {"effective_batch_size": 4, "per_device_batch_size": 2, "max_length": 64, "bf16": False,
                     "gradient_checkpointing": False, "num_train_epochs": 1, "learning_rate": 1e-3, **training},
    })


@pytest.mark.parametrize("launcher,ds,gpus", [
    ("deepspeed", "deployments/deepspeed/zero2.json", 1),
    ("torchrun", "deployments/deepspeed/zero2.json", 2),
    ("deepspeed", "deployments/deepspeed/zero3.json", 1),
    ("torchrun", "deployments/deepspeed/zero3.json", 2),
    # the paper's setup: optimizer and parameters offloaded (DeepSpeed compiles its CPU Adam on first use)
    ("deepspeed", "deployments/deepspeed/zero3_offload.json", 1),
])
def test_deepspeed_fine_tune_gives_a_loadable_checkpoint(tmp_path, tiny_model, answers, repo, launcher, ds, gpus,
                                                         monkeypatch):
    ports = []
    monkeypatch.setattr(launch, "free_port", lambda: ports.append(launch_free_port()) or ports[-1])
    cfg = _config(tmp_path, launcher=launcher, deepspeed_config=str(repo / ds), num_gpus=gpus)
    ckpt = train_student(cfg, answers, str(tiny_model), tmp_path / "student", run_id="t", iteration=0,
                         options=TrainOptions(max_steps=2, timeout_s=600))
    assert (ckpt / COMPLETE).is_file()
    # DeepSpeed's CPU all-reduce buffer (66 MB of /dev/shm per rank under its launcher) is not left behind
    assert len(ports) == 1 and not list(Path("/dev/shm").glob(f"deepspeed_allreduce_buffer_*_{ports[0]}_*"))
    info = checkpoint_info(ckpt)
    assert info["prompt_format"] == "alpaca" and info["train_data"]["sha256"] == answers.sha256
    assert info["examples"] == 24 and info["world_size"] == gpus and info["global_step"] == 2
    assert info["training_args"]["gradient_accumulation_steps"] == 4 // (2 * gpus)
    assert info["config"]["training"]["launcher"] == launcher
    log = (tmp_path / "student" / "train.log").read_text()
    assert "DeepSpeed" in log or "deepspeed" in log
    model = AutoModelForCausalLM.from_pretrained(ckpt)
    tok = AutoTokenizer.from_pretrained(ckpt)
    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    changed = any(not torch.equal(a, b) for a, b in zip(model.state_dict().values(), base.state_dict().values()))
    assert changed, "training did not change any weight"
    assert tok("hi")["input_ids"]
    # the checkpoint serves with the prompt it was trained on, not the base model's ChatML template
    assert tok.apply_chat_template([{"role": "user", "content": "Name 2 colours.", "input": "in English"}],
                                   tokenize=False, add_generation_prompt=True) == student_prompt("Name 2 colours.", "in English")


@pytest.mark.parametrize("ds", [None, "deployments/deepspeed/zero2.json"])
def test_bf16_on_cpu_with_frozen_embeddings(tmp_path, tiny_model, answers, repo, ds):
    """The embedded demo's fine-tune settings (one plain process, no DeepSpeed), and the same under
    ZeRO-2: bf16 mixed precision on the CPU and a frozen (tied) embedding: every other weight moves,
    the embedding does not."""
    cfg = _config(tmp_path, launcher="python", deepspeed_config=str(repo / ds) if ds else None,
                  bf16=True, freeze_embeddings=True)
    ckpt = train_student(cfg, answers, str(tiny_model), tmp_path / "student", options=TrainOptions(max_steps=2, timeout_s=600))
    info = checkpoint_info(ckpt)
    assert info["training_args"]["bf16"] is True
    # without DeepSpeed the weights stay fp32 (bf16 only under autocast); under ZeRO they are bf16
    saved = json.loads((ckpt / "config.json").read_text()).get("dtype")
    assert saved == ("bfloat16" if ds else "float32")
    trained = AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.float32).state_dict()
    base = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).state_dict()
    emb = "model.embed_tokens.weight"
    rounded = (lambda x: x.to(torch.bfloat16).float()) if ds else (lambda x: x)
    # the frozen embedding comes back as it was (rounded to bf16 when saved in bf16)
    assert torch.equal(trained[emb], rounded(base[emb]))
    moved = [k for k in base if k != emb and k in trained and not torch.equal(trained[k], rounded(base[k]))]
    assert any("mlp" in k for k in moved) and any("self_attn" in k for k in moved), moved


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model, answers, repo):
    """Two steps of a fine-tune (full or LoRA) through the python launcher under ZeRO-2, with a Trainer
    checkpoint after each step, made once per method; each test gets a copy of its output folder."""
    import shutil

    made: dict[str, Path] = {}

    def copy(method: str, dest: Path):
        cfg = _config(tmp_path_factory.getbasetemp(), launcher="python",
                      deepspeed_config=str(repo / "deployments/deepspeed/zero2.json"), method=method)
        if method not in made:
            out = tmp_path_factory.mktemp(f"trained-{method}") / "student"
            first = train_student(cfg, answers, str(tiny_model), out,
                                  options=TrainOptions(max_steps=2, save_steps=1, timeout_s=600,
                                                       keep_trainer_checkpoints=True))
            assert checkpoint_info(first)["resumed"] is False and checkpoint_info(first)["global_step"] == 2
            made[method] = out
        shutil.copytree(made[method], dest)
        return cfg, dest

    return copy


@pytest.mark.parametrize("method", ["full", "lora"])
def test_interrupted_training_resumes_from_its_trainer_checkpoint(tmp_path, tiny_model, answers, trained, method):
    cfg, out = trained(method, tmp_path / "student")
    (out / "final" / COMPLETE).unlink()  # as if the run died after its last Trainer checkpoint
    second = train_student(cfg, answers, str(tiny_model), out,
                           options=TrainOptions(max_steps=4, save_steps=1, timeout_s=600))
    info = checkpoint_info(second)
    assert info["resumed"] is True and info["global_step"] == 4
    steps = [h["step"] for h in info["log_history"] if "loss" in h]
    assert steps[-1] == 4


def test_a_complete_checkpoint_is_not_trained_again(tmp_path, tiny_model, answers, trained):
    cfg, out = trained("full", tmp_path / "student")
    ckpt = out / "final"
    mtime, logged = (ckpt / "model.safetensors").stat().st_mtime, (out / "train.log").stat().st_size
    assert train_student(cfg, answers, str(tiny_model), out, options=TrainOptions(max_steps=1, timeout_s=600)) == ckpt
    assert (ckpt / "model.safetensors").stat().st_mtime == mtime
    assert (out / "train.log").stat().st_size == logged  # nothing was launched
    assert json.loads((out / "run_config.json").read_text())["training"]["launcher"] == "python"


def test_a_trainer_checkpoint_cut_short_is_skipped_on_resume(tmp_path, tiny_model, answers, trained):
    """A save cut short (a full disk) leaves checkpoint-2 without its state: the retry resumes from
    checkpoint-1 instead of failing on the broken one."""
    from lion_core.student.train import TRAINER_STATE

    cfg, out = trained("full", tmp_path / "student")
    (out / "final" / COMPLETE).unlink()
    (out / "trainer" / "checkpoint-2" / TRAINER_STATE).unlink()
    second = train_student(cfg, answers, str(tiny_model), out,
                           options=TrainOptions(max_steps=3, save_steps=1, timeout_s=600))
    info = checkpoint_info(second)
    assert info["resumed"] is True and info["global_step"] == 3
    assert [h["step"] for h in info["log_history"] if "loss" in h][-2:] == [2, 3]  # steps 2 and 3 ran again after 1


def _lora_config(tmp_path, repo, ds, launcher="deepspeed", gpus=1, **lora):
    return _config(tmp_path, launcher=launcher, num_gpus=gpus, deepspeed_config=str(repo / ds) if ds else None,
                   method="lora", lora={"rank": 4, "alpha": 8, **lora})


@pytest.mark.parametrize("launcher,ds,gpus", [
    ("deepspeed", "deployments/deepspeed/zero2.json", 1),
    ("deepspeed", "deployments/deepspeed/zero3.json", 1),
    # two ranks: ZeRO-3 partitions the frozen base and the adapters between them
    ("torchrun", "deployments/deepspeed/zero3.json", 2),
])
def test_lora_through_real_launchers_trains_an_adapter_and_the_next_iteration_continues_it(
        tmp_path, tiny_model, answers, repo, launcher, ds, gpus):
    """LoRA under the real launchers with ZeRO-2 and ZeRO-3: the checkpoint is an adapter (no full
    weights) on a base that did not move; the next iteration starts from it and trains it on."""
    from safetensors.torch import load_file

    from lion_core.student.lora import adapter_base, is_adapter

    cfg = _lora_config(tmp_path, repo, ds, launcher=launcher, gpus=gpus)
    first = train_student(cfg, answers, str(tiny_model), tmp_path / "iter-0", run_id="t", iteration=0,
                          options=TrainOptions(max_steps=2, timeout_s=600))
    assert is_adapter(first) and not (first / "model.safetensors").exists()
    info = checkpoint_info(first)
    assert info["method"] == "lora" and info["adapter_base"] == str(tiny_model) and adapter_base(first) == str(tiny_model)
    assert 0 < info["trainable_parameters"] < info["parameters"] / 5 and info["peak_rss_bytes"] > 0
    assert info["world_size"] == gpus and "deepspeed" in (tmp_path / "iter-0" / "train.log").read_text().lower()
    adapter = load_file(first / "adapter_model.safetensors")
    assert adapter and all("lora_" in k for k in adapter)
    assert any(k.endswith("lora_B.weight") and v.abs().sum() > 0 for k, v in adapter.items()), "lora_B is still zero"
    second = train_student(cfg, answers, str(first), tmp_path / "iter-1", run_id="t", iteration=1,
                           options=TrainOptions(max_steps=2, timeout_s=600))
    again = checkpoint_info(second)
    assert again["base_model"] == str(first) and again["adapter_base"] == str(tiny_model)
    later = load_file(second / "adapter_model.safetensors")
    assert later.keys() == adapter.keys() and any(not torch.equal(later[k], adapter[k]) for k in adapter)
    steps = [h["loss"] for h in again["log_history"] if "loss" in h]
    first_steps = [h["loss"] for h in info["log_history"] if "loss" in h]
    assert steps[0] < first_steps[0], "the second fine-tune did not start where the first ended"


def test_a_full_fine_tune_refuses_to_start_from_an_adapter(tmp_path, answers, trained):
    from lion_core.student.launch import TrainingError
    from lion_core.student.lora import is_adapter

    _, out = trained("lora", tmp_path / "lora")
    lora = out / "final"
    assert is_adapter(lora)
    with pytest.raises(TrainingError, match="is a LoRA adapter, and training.method is full"):
        train_student(_config(tmp_path, launcher="python", deepspeed_config=None), answers, str(lora),
                      tmp_path / "full", options=TrainOptions(max_steps=1, timeout_s=600))


def test_lora_of_the_embedded_student_exports_a_merged_model_that_serves_the_alpaca_prompt(tmp_path, answers, repo):
    """The embedded SmolLM2 with a LoRA adapter, trained through the deepspeed launcher (ZeRO-2) on CPU:
    the merged export loads with plain transformers (no adapter files), answers as base + adapter does,
    and its tokenizer renders the Alpaca prompt it was trained on."""
    from lion_core.model_export import export_model
    from lion_core.student.lora import load_student
    from lion_core.student.models import resolve_model

    cfg = _lora_config(tmp_path, repo, "deployments/deepspeed/zero2.json", target_modules=["q_proj", "v_proj"])
    # two steps: the first one's learning rate is 0 (warm-up)
    ckpt = train_student(cfg, answers, resolve_model("embedded:smollm2-135m-instruct"), tmp_path / "student",
                         options=TrainOptions(max_steps=2, timeout_s=900))
    merged = export_model(ckpt, tmp_path / "merged", merge=True)
    out = Path(merged.out)
    assert merged.kind == "merged" and not (out / "adapter_config.json").exists() and (out / "model.safetensors").is_file()
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    assert type(model).__name__ == "LlamaForCausalLM"
    tok = AutoTokenizer.from_pretrained(out)
    assert tok.apply_chat_template([{"role": "user", "content": "Name 2 colours.", "input": "in English"}],
                                   tokenize=False, add_generation_prompt=True) == student_prompt("Name 2 colours.", "in English")
    ids = tok(student_prompt("Name 2 colours.", ""), return_tensors="pt")
    with torch.no_grad():
        adapted = load_student(ckpt, dtype=torch.float32).eval()(**ids).logits
        plain = model(**ids).logits
        base = AutoModelForCausalLM.from_pretrained(resolve_model("embedded:smollm2-135m-instruct"),
                                                    dtype=torch.float32).eval()(**ids).logits
    assert torch.allclose(adapted, plain, atol=1e-3), (adapted - plain).abs().max()
    assert (plain - base).abs().max() > 1e-2, "the merged model answers as the base: the adapter was lost"
    card = (out / "README.md").read_text()
    assert "library_name: transformers" in card and "## Merged" in card
    assert json.loads((out / "lion_checkpoint.json").read_text())["exported"]["kind"] == "merged"
    as_is = export_model(ckpt, tmp_path / "adapter")
    assert as_is.kind == "adapter" and (Path(as_is.out) / "adapter_model.safetensors").is_file()
    with pytest.raises(Exception, match="already exists and is not empty"):
        export_model(ckpt, tmp_path / "merged", merge=True)
