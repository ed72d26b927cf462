from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from lion_core.config import RunConfig, load_config, parse_config
from lion_core.errors import ConfigError

REPO = Path(__file__).resolve().parents[3]
SHIPPED = sorted((REPO / "configs").glob("*.yaml"))


def test_configs_folder_is_not_empty():
    names = {p.name for p in SHIPPED}
    assert {"embedded.yaml", "openai.yaml"} <= names


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    cfg = load_config(path)
    assert isinstance(cfg, RunConfig)
    # a shipped DeepSpeed config path must point at a checked-in file
    if cfg.training.deepspeed_config:
        assert Path(cfg.training.deepspeed_config).is_file()
    if cfg.data.seed and not cfg.data.seed.startswith("hf:"):
        assert Path(cfg.data.seed).is_file()
    assert cfg.storage.runs_root == str(REPO / "runs")  # beside configs/, from any working directory


def test_embedded_config_needs_no_key():
    cfg = load_config(REPO / "configs" / "embedded.yaml")
    for role in (cfg.teacher, cfg.referee, cfg.generator):
        assert role.base_url == "embedded"
        assert role.api_key_env is None


def test_the_demo_is_the_whole_method_with_labelled_stand_ins():
    cfg = load_config(REPO / "configs" / "embedded.yaml")
    # a genuinely weaker student derived from the teacher, and stand-ins named as such
    assert cfg.teacher.model == "smollm2-135m-instruct" and cfg.student.keep_layers == 24
    assert (cfg.referee.model, cfg.generator.model) == ("smollm2-likelihood-referee", "smollm2-list-generator")
    text = (REPO / "configs" / "embedded.yaml").read_text()
    assert "STAND-INS" in text and "configs/openai.yaml" in text
    # the run ends with its effect measured on held-out questions
    assert cfg.evaluation.after_run and cfg.evaluation.eval_set == str(REPO / "data" / "demo_eval.jsonl")
    assert cfg.evaluation.judge is None and cfg.evaluation.reference.model == cfg.teacher.model
    # the demo's fine-tune kept small: one process, bf16, frozen embedding, fused AdamW, ZeRO-2
    t = cfg.training
    assert (t.launcher, t.bf16, t.freeze_embeddings, t.optim, t.deepspeed_config) == (
        "python", True, True, "adamw_torch_fused", str(REPO / "deployments" / "deepspeed" / "zero2.json"))
    # a real referee stays the default for real runs
    real = load_config(REPO / "configs" / "openai.yaml")
    assert real.referee.base_url.startswith("https://") and not real.evaluation.after_run


def test_openai_config_is_the_papers_setup():
    cfg = load_config(REPO / "configs" / "openai.yaml")
    assert {cfg.teacher.model, cfg.referee.model, cfg.generator.model} == {"gpt-3.5-turbo"}
    assert cfg.teacher.api_key_env == "OPENAI_API_KEY"
    assert cfg.training.deepspeed_config.endswith("zero3_offload.json")
    assert cfg.training.world_size == 8
    assert cfg.training.gradient_accumulation_steps == 4


def test_defaults_are_the_papers_settings():
    cfg = RunConfig()
    assert (cfg.teacher.sampling.temperature, cfg.teacher.sampling.max_tokens) == (0.7, 1024)
    assert (cfg.referee.sampling.temperature, cfg.referee.sampling.max_tokens) == (0.2, 512)
    g = cfg.generator
    assert (g.sampling.temperature, g.sampling.top_p, g.sampling.max_tokens, g.max_tokens_per_seed_word) == (1.0, 1.0, None, 4)
    s = cfg.student.generation
    assert (s.do_sample, s.temperature, s.max_new_tokens) == (True, 0.7, 1024)
    assert cfg.student.prompt_format == "alpaca"
    t = cfg.training
    assert (t.learning_rate, t.num_train_epochs, t.max_length, t.lr_scheduler_type) == (2e-5, 3, 1024, "cosine")
    assert (t.warmup_ratio, t.weight_decay, t.effective_batch_size, t.bf16) == (0.03, 0.0, 128, True)
    assert t.deepspeed_config.endswith("zero3_offload.json")
    lp = cfg.loop
    assert (lp.iterations, lp.tau, lp.new_instructions_per_iteration, lp.hard_easy_ratio, lp.rouge_l_threshold) == (
        3, 1.0, 6000, (1.0, 1.0), 0.7)


def test_config_is_frozen():
    cfg = RunConfig()
    with pytest.raises(ValidationError):
        cfg.loop.tau = 2.0


def _write(tmp_path, text: str) -> Path:
    p = tmp_path / "run.yaml"
    p.write_text(text)
    return p


def test_one_error_lists_every_bad_field_by_path(tmp_path):
    p = _write(tmp_path, """
teacher:
  sampling: {temperature: 5}
loop:
  tau: -1
  hard_easy_ratio: [0, 0]
student:
  modle: typo
training:
  effective_batch_size: 100
  per_device_batch_size: 8
""")
    with pytest.raises(ConfigError) as exc:
        load_config(p)
    msg = str(exc.value)
    assert str(p) in msg
    assert "5 invalid fields" in msg
    for path in ("teacher.sampling.temperature", "loop.tau", "loop.hard_easy_ratio", "student.modle", "training"):
        assert f"  - {path}:" in msg, msg
    assert "unknown field" in msg
    assert "not a multiple of per_device_batch_size" in msg


def test_invalid_yaml_names_the_line(tmp_path):
    p = _write(tmp_path, "loop:\n  tau: 1.0\n  iterations: [3\n")
    with pytest.raises(ConfigError, match=r"invalid YAML at line \d+"):
        load_config(p)


def test_duplicate_keys_are_an_error(tmp_path):
    p = _write(tmp_path, "loop:\n  tau: 1.0\n  tau: 2.0\n")
    with pytest.raises(ConfigError, match="duplicate key 'tau'"):
        load_config(p)


@pytest.mark.parametrize("text,match", [
    ("- a\n- b\n", "top level must be a mapping"),
    ("teacher: 3\n", "teacher"),
    ("teacher: {base_url: 'ftp://x'}\n", "teacher.base_url"),
    ("training: {num_nodes: 2}\n", "hostfile"),
    ("referee: {base_url: embedded, model: gpt-4}\n", "referee: model 'gpt-4' is not embedded"),
    ("evaluation: {after_run: true}\n", "evaluation: after_run needs an eval_set"),
    ("student: {keep_layers: 0}\n", "student.keep_layers"),
    ("teacher: {retry: {invalid_finish_reasons: [stop]}}\n", "teacher.retry.invalid_finish_reasons: .*'stop'"),
    ("referee: {retry: {max_unusable_replies: 0}}\n", "referee.retry.max_unusable_replies"),
    ("generator: {retry: {max_outage_s: 0}}\n", "generator.retry.max_outage_s"),
    ("budget: {max_cost_usd: -5}\n", "budget.max_cost_usd"),
    ("budget: {per_role: {techer: 5}}\n", "budget.per_role"),
    ("budget: {per_role: {teacher: 0}}\n", "budget.per_role.teacher"),
    ("budget: {max_cots_usd: 5}\n", "budget.max_cots_usd"),
    ("teacher: {rate_limits: {adaptive: maybe}}\n", "teacher.rate_limits.adaptive"),
])
def test_bad_values_are_rejected(tmp_path, text, match):
    with pytest.raises(ConfigError, match=match):
        load_config(_write(tmp_path, text))


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml: config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_a_pasted_key_is_rejected_and_not_echoed(tmp_path):
    key = "sk-" + "A1b2C3d4" * 5
    with pytest.raises(ConfigError) as exc:
        load_config(_write(tmp_path, f"referee: {{api_key_env: {key}}}\n"))
    assert "referee.api_key_env" in str(exc.value)
    assert "looks like an API key" in str(exc.value)
    assert key not in str(exc.value)
    assert "A1b2C3d4" not in str(exc.value)


def test_empty_file_gives_the_defaults(tmp_path):
    assert load_config(_write(tmp_path, "")) == RunConfig()


def test_config_hash_ignores_layout_and_tracks_values(tmp_path):
    a = parse_config(yaml.safe_load("loop: {tau: 1.0, iterations: 3}\nstorage: {runs_root: runs}"))
    b = parse_config(yaml.safe_load("storage:\n  runs_root: runs/\nloop:\n  iterations: 3\n  tau: 1"))
    c = parse_config(yaml.safe_load("loop: {tau: 1.5}"))
    assert a.config_hash() == b.config_hash() == RunConfig().config_hash()
    assert c.config_hash() != a.config_hash()


def test_training_derives_accumulation_from_effective_batch():
    cfg = parse_config({"training": {"effective_batch_size": 128, "per_device_batch_size": 2, "num_gpus": 4}})
    assert cfg.training.gradient_accumulation_steps == 16
    cpu = parse_config({"training": {"launcher": "python", "effective_batch_size": 8, "per_device_batch_size": 2}})
    assert cpu.training.world_size == 1 and cpu.training.gradient_accumulation_steps == 4


def test_response_store_defaults_beside_a_local_runs_root(tmp_path):
    cfg = parse_config({"storage": {"runs_root": str(tmp_path / "runs")}})
    assert cfg.storage.response_store_path() == str(tmp_path / "runs" / "responses.sqlite")


def test_remote_runs_root_needs_a_response_store_of_its_own():
    with pytest.raises(ConfigError, match="storage: .*set response_store to a postgresql:// URL"):
        parse_config({"storage": {"runs_root": "s3://bucket/runs"}})
    with pytest.raises(ConfigError, match="storage.response_store: .*local SQLite path or a postgresql:// URL"):
        parse_config({"storage": {"runs_root": "s3://b/r", "response_store": "s3://b/r.sqlite"}})
    with pytest.raises(ConfigError, match="storage: .*set checkpoints_root to a local path"):
        parse_config({"storage": {"runs_root": "s3://b/r", "response_store": "/tmp/r.sqlite"}})
    ok = parse_config({"storage": {"runs_root": "s3://b/r", "response_store": "/tmp/r.sqlite", "checkpoints_root": "/ck"}})
    assert ok.storage.response_store_path() == "/tmp/r.sqlite"
    assert ok.storage.checkpoint_dir("run1", 2) == "/ck/run1/iter-2"


def test_a_postgresql_response_store_is_a_url_without_its_password():
    ok = parse_config({"storage": {"runs_root": "s3://b/r", "checkpoints_root": "/shared/ck",
                                   "response_store": "postgresql://lion@db.internal:5432/lion"}})
    assert ok.storage.shared_store and ok.storage.response_store_path() == "postgresql://lion@db.internal:5432/lion"
    assert ok.storage.password_env == "LION_STORE_PASSWORD"
    for url, why in [("postgresql://lion:hunter2@db/lion", "carries a password"),
                     ("postgresql://lion:hunter2/x#y@db/lion", "carries a password"),  # a generated one, / and #
                     ("mysql://lion:hunter2/z@db/lion", "local SQLite path or a postgresql:// URL"),
                     ("postgresql:///lion", "names no host"),
                     ("postgresql://db.internal", "names no database"),
                     ("postgresql://db:notaport/lion", "not a valid PostgreSQL URL"),
                     ("mysql://db/lion", "local SQLite path or a postgresql:// URL")]:
        with pytest.raises(ConfigError, match=f"storage.response_store: .*{why}") as err:
            parse_config({"storage": {"response_store": url}})
        assert "hunter2" not in str(err.value)
    with pytest.raises(ConfigError, match="storage.password_env: .*name of an environment variable"):
        parse_config({"storage": {"response_store": "postgresql://db/lion", "password_env": "s3cr3t pass!"}})
    with pytest.raises(ConfigError, match="storage.claim_lease_s"):
        parse_config({"storage": {"claim_lease_s": 1}})


def test_local_checkpoints_live_with_the_run(tmp_path):
    cfg = parse_config({"storage": {"runs_root": str(tmp_path)}})
    assert cfg.storage.checkpoint_dir("r", 0) == str(tmp_path / "r" / "checkpoints" / "iter-0")


def test_relative_paths_in_a_config_file_resolve_against_its_folder(tmp_path, monkeypatch):
    folder = tmp_path / "configs"
    folder.mkdir()
    (folder / "model").mkdir()
    path = _write(folder, "data: {seed: seeds.jsonl}\nstorage: {runs_root: ../runs, response_store: r.sqlite}\n"
                          "training: {deepspeed_config: ds/z2.json}\nevaluation: {eval_set: 'hf:org/questions'}\n"
                          "student: {model: model}\n")
    monkeypatch.chdir(tmp_path.parent)
    cfg = load_config(path)
    assert cfg.data.seed == str(folder / "seeds.jsonl")
    assert cfg.storage.runs_root == str(tmp_path / "runs") and cfg.storage.response_store == str(folder / "r.sqlite")
    assert cfg.training.deepspeed_config == str(folder / "ds" / "z2.json")
    assert cfg.evaluation.eval_set == "hf:org/questions"  # not a path
    assert cfg.student.model == str(folder / "model")
    # a hub id stays one; a default path is the project's own file
    cfg = load_config(_write(folder, "student: {model: huggyllama/llama-7b}\n"))
    assert cfg.student.model == "huggyllama/llama-7b"
    assert Path(cfg.training.deepspeed_config).is_file()


def test_operations_fields_do_not_change_the_config_hash_and_results_fields_do():
    base = RunConfig()
    data = base.to_json_dict()
    data["teacher"]["rate_limits"]["requests_per_minute"] = 7
    data["referee"]["retry"]["max_attempts"] = 2
    data["generator"]["api_key_env"] = "OTHER_KEY"
    data["orchestration"]["max_parallel_tasks"] = 9
    data["storage"]["runs_root"] = "/elsewhere/runs"
    data["training"]["timeout_s"] = 60
    assert parse_config(data).config_hash() == base.config_hash()
    for section, field, value in (("teacher", "model", "smollm2-list-generator"), ("loop", "tau", 0.5),
                                  ("training", "learning_rate", 1e-3), ("student", "keep_layers", 3),
                                  ("referee", "prompt_style", "vicuna")):
        data = base.to_json_dict()
        data[section][field] = value
        assert parse_config(data).config_hash() != base.config_hash(), (section, field)


def test_batch_mode_is_refused_on_the_embedded_server_naming_the_role():
    with pytest.raises(ConfigError, match=r"referee.*Batch API"):
        parse_config({"referee": {"mode": "batch"}})


def test_batch_requests_cost_half_the_price_unless_a_batch_price_is_set():
    from lion_core.config import ApiRole, BatchSettings, Price

    role = ApiRole(base_url="http://api.example/v1", model="m", mode="batch",
                   price=Price(prompt_per_million=2.0, completion_per_million=6.0))
    assert role.batch_price() == Price(prompt_per_million=1.0, completion_per_million=3.0)
    own = Price(prompt_per_million=0.7, completion_per_million=0.9)
    assert role.model_copy(update={"batch": BatchSettings(price=own)}).batch_price() == own


def test_a_resume_may_switch_a_role_to_batch_mode():
    base = {"teacher": {"base_url": "http://api.example/v1", "model": "m"}}
    batched = {"teacher": {**base["teacher"], "mode": "batch", "batch": {"poll_interval_s": 5}}}
    assert parse_config(base).config_hash() == parse_config(batched).config_hash()


def test_lora_settings_are_validated_and_documented():
    from lion_core.config.explain import explain

    cfg = parse_config({"training": {"method": "lora", "lora": {"rank": 8, "alpha": 16, "target_modules": ["q_proj", "v_proj"],
                                                                "modules_to_save": ["lm_head"]}}})
    lora = cfg.training.lora
    assert cfg.training.method == "lora" and lora.rank == 8 and lora.target_modules == ["q_proj", "v_proj"]
    assert parse_config({}).training.method == "full" and parse_config({}).training.lora.target_modules == "all-linear"
    for bad, field in ((({"method": "lorax"}), "training.method"), ({"lora": {"rank": 0}}, "training.lora.rank"),
                       ({"lora": {"dropout": 1.0}}, "training.lora.dropout"),
                       ({"lora": {"target_modules": []}}, "training.lora.target_modules"),
                       ({"lora": {"ranks": 4}}, "training.lora.ranks")):
        with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
            parse_config({"training": bad})
    with pytest.raises(ConfigError, match="either frozen or trained"):
        parse_config({"training": {"method": "lora", "freeze_embeddings": True, "lora": {"modules_to_save": ["embed_tokens"]}}})
    text = explain("training.lora")
    assert "training.lora.rank" in text and "alpha / rank" in text


def test_a_lora_config_changes_the_run_identity_and_a_full_run_keeps_its_old_hash():
    """method and lora are what the student becomes (part of the config hash); a run recorded before these
    fields existed is read with their defaults, which keep its behaviour, so it still resumes."""
    full, lora = parse_config({}), parse_config({"training": {"method": "lora"}})
    assert full.config_hash() != lora.config_hash()
    assert lora.config_hash() != parse_config({"training": {"method": "lora", "lora": {"rank": 4}}}).config_hash()
    # A full fine-tune's hash is the one it had before these fields existed (the default config's, as
    # recorded by the previous version): every task cache key and committed file of a run made then
    # carries it, so a changed hash would make its resume redo and then refuse to rewrite its files.
    assert full.config_hash() == "709c3e69f7605363ca802e43d180bcd911b76dad1ca37d4321ceb88e76566c38"
    assert parse_config({"training": {"lora": {"rank": 4}}}).config_hash() == full.config_hash()  # unused by full


def test_qlora_needs_a_gpu_bitsandbytes_and_no_parameter_offload(tmp_path):
    from lion_core.preflight import training_problems

    offload = tmp_path / "offload.json"
    offload.write_text('{"zero_optimization": {"stage": 3, "offload_param": {"device": "cpu"}}}')
    cfg = parse_config({"training": {"method": "qlora", "deepspeed_config": str(offload)}})
    found = "\n".join(training_problems(cfg, cuda_available=False))
    assert "needs a CUDA GPU" in found and "offloads parameters to the CPU" in found
    on_gpu = training_problems(cfg.model_copy(update={"training": cfg.training.model_copy(update={"deepspeed_config": None})}),
                               cuda_available=True)
    import importlib.util

    assert on_gpu == ([] if importlib.util.find_spec("bitsandbytes") else
                      ["training.method: qlora needs bitsandbytes, which is not installed (pip install 'lion-distill[qlora]')"])
    assert training_problems(parse_config({"training": {"method": "lora"}}), cuda_available=False) == []
