"""The installed `lion` console script, run as a user runs it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

LION = Path(sys.executable).parent / "lion"
REPO = Path(__file__).resolve().parents[2]


def lion(*args, cwd=None, timeout=120, env=None):
    env = {**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}
    return subprocess.run([str(LION), *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=timeout)


@pytest.fixture
def config(tmp_path):
    text = (REPO / "configs" / "embedded.yaml").read_text().replace("runs_root: ../runs", f"runs_root: {tmp_path / 'runs'}")
    text = text.replace(": ../", f": {REPO}/")
    p = tmp_path / "embedded.yaml"
    p.write_text(text)
    return p


def test_script_is_installed():
    assert LION.exists()


def test_init_then_pools_show(config, tmp_path):
    r = lion("init", "--config", config, "--seed", REPO / "data" / "demo_seeds.jsonl", "--run-id", "demo", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "run demo created" in r.stdout and "32 records, 0 exact duplicates dropped" in r.stdout
    r = lion("pools", "show", "demo", "--config", config)
    assert r.returncode == 0, r.stderr
    assert "train_pool" in r.stdout and "cache_pool" in r.stdout and "[ok]" in r.stdout
    assert "origins: seed=32" in r.stdout and "demo_seeds.jsonl" in r.stdout
    r = lion("pools", "show", "demo", "--runs-root", tmp_path / "runs", "--json")
    desc = json.loads(r.stdout)
    assert [f["rows"] for f in desc["iterations"][0]["files"]] == [32, 32]


def test_init_uses_the_configs_seed_relative_to_the_config_file(config, tmp_path):
    (tmp_path / "mine.jsonl").write_text('{"instruction": "Name three rivers.", "input": ""}\n')
    config.write_text(config.read_text().replace(f"seed: {REPO}/data/demo_seeds.jsonl", "seed: mine.jsonl"))
    r = lion("init", "--config", config, "--run-id", "from-config", cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert f"seed:        {tmp_path / 'mine.jsonl'}" in r.stdout and "1 records" in r.stdout


def test_bad_seed_is_one_message_no_traceback_nothing_written(config, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "ok"}\n{"instruction": 7}\n')
    r = lion("init", "--config", config, "--seed", bad, "--run-id", "x")
    assert r.returncode == 1
    assert r.stderr.startswith("lion: error: ") and "Traceback" not in r.stderr
    assert "bad.jsonl" in r.stderr and "line 2" in r.stderr and "must be a string" in r.stderr
    assert not (tmp_path / "runs").exists()


def test_debug_shows_the_traceback(config, tmp_path):
    r = lion("--debug", "init", "--config", config, "--seed", tmp_path / "missing.jsonl")
    assert r.returncode != 0 and "Traceback" in r.stderr and "SeedError" in r.stderr


def test_existing_run_is_not_overwritten(config):
    seed = REPO / "data" / "demo_seeds.jsonl"
    assert lion("init", "-c", config, "-s", seed, "--run-id", "twice").returncode == 0
    r = lion("init", "-c", config, "-s", seed, "--run-id", "twice")
    assert r.returncode == 1 and "already exists" in r.stderr


def test_pools_show_fails_on_a_tampered_file(config, tmp_path):
    assert lion("init", "-c", config, "-s", REPO / "data" / "demo_seeds.jsonl", "--run-id", "t").returncode == 0
    pool = tmp_path / "runs" / "t" / "iter-0" / "train_pool.parquet"
    pool.write_bytes(pool.read_bytes()[:-10])
    r = lion("pools", "show", "t", "-c", config)
    assert r.returncode == 1
    assert "FAILED" in r.stdout and "sha256 mismatch" in r.stderr and "Traceback" not in r.stderr


def test_pools_show_unknown_run(config):
    r = lion("pools", "show", "nope", "-c", config)
    assert r.returncode == 1 and "no run 'nope'" in r.stderr


def test_config_check(tmp_path):
    r = lion("config", "check", "--no-probe", REPO / "configs" / "openai.yaml", env={"OPENAI_API_KEY": "sk-test"})
    assert r.returncode == 0 and "ok" in r.stdout and "$OPENAI_API_KEY" in r.stdout
    r = lion("config", "check", "--no-probe", REPO / "configs" / "openai.yaml")
    assert r.returncode == 1 and "3 problem(s)" in r.stderr and "teacher.api_key_env: $OPENAI_API_KEY is not set" in r.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("loop: {tau: -1, iterations: 0}\nteacher: {sampling: {top_p: 0}}\n")
    r = lion("config", "check", bad)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    for field in ("loop.tau", "loop.iterations", "teacher.sampling.top_p"):
        assert field in r.stderr


def test_qlora_on_a_machine_without_a_gpu_is_refused_at_config_check(config):
    """QLoRA's 4-bit base needs CUDA: on this CPU machine `config check` says so before anything is paid,
    and names the field; the same config with LoRA passes."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: QLoRA is allowed here (make gpu-check trains it)")
    text = config.read_text().replace("training:\n", "training:\n  method: qlora\n", 1)
    qlora = config.with_name("qlora.yaml")
    qlora.write_text(text)
    r = lion("config", "check", "--no-probe", qlora)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "training.method: qlora" in r.stderr and "needs a CUDA GPU" in r.stderr and "use method lora" in r.stderr
    lora = config.with_name("lora.yaml")
    lora.write_text(text.replace("method: qlora", "method: lora"))
    r = lion("config", "check", "--no-probe", lora)
    assert r.returncode == 0, r.stderr
    assert "training  lora, rank 16 adapters on all-linear, python on 1 process(es), DeepSpeed zero2.json" in r.stdout


def test_config_explain():
    r = lion("config", "explain", "loop")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("[loop]") and "loop.tau: float >= 0 = 1.0" in r.stdout and "teacher." not in r.stdout
    r = lion("config", "explain", "loop.taux")
    assert r.returncode == 1 and r.stdout == "" and "Traceback" not in r.stderr
    assert r.stderr.startswith("lion: error: unknown config field 'loop.taux'") and "did you mean loop.tau" in r.stderr


def test_usage_error_exits_nonzero():
    r = lion("init")
    assert r.returncode == 2 and "--config" in r.stderr


def test_run_and_evaluate_refuse_bad_requests_before_starting_anything(config, tmp_path):
    r = lion("run", "--config", config, "--resume", "no-such-run")
    assert r.returncode == 1 and "no run 'no-such-run'" in r.stderr
    assert lion("init", "--config", config, "--run-id", "taken", cwd=REPO).returncode == 0
    r = lion("run", "--config", config, "--run-id", "taken")
    assert r.returncode == 1 and "continue it with --resume taken" in r.stderr
    r = lion("evaluate", "--config", config, "--checkpoints", str(tmp_path / "missing"))
    assert r.returncode == 1 and "not a model folder" in r.stderr
    r = lion("evaluate", "--config", config, "--checkpoints", "run:nothing-here")
    assert r.returncode == 1 and "no finished checkpoint" in r.stderr


@pytest.mark.slow
def test_config_check_reports_every_problem_before_anything_is_paid(tmp_path):
    from lion_core.llm.embedded import free_port
    from tests.fault_server import FaultPlan, FaultServer

    secret = "sk-lion-check-" + "5" * 30
    with FaultServer(FaultPlan(api_key=secret)) as api:
        cfg = tmp_path / "sub" / "lion.yaml"
        cfg.parent.mkdir()
        (tmp_path / "sub" / "seeds.jsonl").write_text('{"instruction": "Name a colour.", "input": ""}\n')
        cfg.write_text(f"""
teacher: {{base_url: "{api.url}", model: m, api_key_env: LION_CHECK_KEY}}
referee: {{base_url: "http://127.0.0.1:{free_port()}/v1", model: m}}
generator: {{base_url: "{api.url}", model: m, api_key_env: LION_CHECK_KEY}}
training: {{deepspeed_config: missing/zero9.json}}
data: {{seed: seeds.jsonl}}
evaluation: {{eval_set: no-questions.jsonl}}
""")
        r = lion("config", "check", cfg, cwd=REPO, env={"LION_CHECK_KEY": "sk-wrong"})
        assert r.returncode == 1, r.stdout + r.stderr
        assert secret not in r.stderr and "sk-wrong" not in r.stderr
        for problem in (f"training.deepspeed_config: {tmp_path}/sub/missing/zero9.json does not exist",
                        f"evaluation.eval_set: {tmp_path}/sub/no-questions.jsonl does not exist",
                        "teacher.base_url: " + api.url + " rejected the key (HTTP 401)",
                        "generator.base_url: " + api.url + " rejected the key (HTTP 401)",
                        "referee.base_url: http://127.0.0.1:", "does not answer"):
            assert problem in r.stderr, r.stderr
        assert "data.seed" not in r.stderr  # found next to the config, from another working directory
        # the same config refuses to run, before any request is sent
        r = lion("run", "--config", cfg, "--run-id", "never", cwd=REPO, env={"LION_CHECK_KEY": secret})
        assert r.returncode == 1 and "cannot start" in r.stderr and "zero9.json" in r.stderr
        assert sum(api.stats.answered.values()) == 0
        assert not (tmp_path / "sub" / "runs" / "never").exists()


@pytest.mark.parametrize("given,expected", [(None, False), ("true", True)])
def test_prefect_analytics_are_off_unless_the_environment_turns_them_on(given, expected):
    """`lion` outside `make`: Prefect's analytics (calls to the internet) are off by default."""
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_SERVER_ANALYTICS_ENABLED"}
    env["PREFECT_API_URL"] = "http://127.0.0.1:9/api"  # named: no local API is started for this check
    if given is not None:
        env["PREFECT_SERVER_ANALYTICS_ENABLED"] = given
    code = ("from flows.cli import prefect_setup; prefect_setup()\n"
            "from prefect.settings import get_current_settings\n"
            "print(get_current_settings().server.analytics_enabled)")
    r = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == str(expected)
