"""`lion config check` and `lion config explain` (lion_cli.config)."""

import pytest

from tests.lion_cli.lion_script import REPO, lion


def test_config_check(tmp_path):
    # The shipped config reads its seeds from the hub: offline, and not in the cache, that is the one problem.
    r = lion("config", "check", "--no-probe", REPO / "configs" / "openai.yaml",
             env={"OPENAI_API_KEY": "sk-test", "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 1 and "1 problem(s)" in r.stderr and "data.seed: hf:tatsu-lab/alpaca" in r.stderr
    assert "HF_HUB_OFFLINE is set" in r.stderr
    local = tmp_path / "openai-local.yaml"
    local.write_text((REPO / "configs" / "openai.yaml").read_text()
                     .replace("seed: hf:tatsu-lab/alpaca", f"seed: {REPO / 'data' / 'demo_seeds.jsonl'}")
                     .replace("deepspeed_config: ../", f"deepspeed_config: {REPO}/"))
    r = lion("config", "check", "--no-probe", local, env={"OPENAI_API_KEY": "sk-test"})
    assert r.returncode == 0 and "ok" in r.stdout and "$OPENAI_API_KEY" in r.stdout, r.stderr
    assert "seeds     32 instructions from" in r.stdout
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


def test_config_check_with_a_postgresql_store(config, postgres_url, postgres_server, monkeypatch):
    """A PostgreSQL store is accepted when its password is set and it answers; a URL with a password, a
    missing password, a wrong one or a server that is down are refused by name, and no password is echoed."""
    import os

    import yaml

    pg = config.with_name("pg.yaml")

    def check(url: str, **env: str):
        data = yaml.safe_load(config.read_text())
        data["storage"]["response_store"] = url
        pg.write_text(yaml.safe_dump(data, sort_keys=False))
        return lion("config", "check", pg, env=env)

    password = os.environ["LION_STORE_PASSWORD"]
    r = check(postgres_url)
    assert r.returncode == 0 and f"store     {postgres_url} (PostgreSQL, password from $LION_STORE_PASSWORD)" in r.stdout, \
        r.stderr
    monkeypatch.delenv("LION_STORE_PASSWORD")
    r = check(postgres_url)
    assert r.returncode == 1 and "storage.password_env: $LION_STORE_PASSWORD (the response store's password) is not set" \
        in r.stderr
    r = check(postgres_url, LION_STORE_PASSWORD="not-the-password")
    assert r.returncode == 1 and "storage.response_store: response store" in r.stderr and "cannot connect" in r.stderr
    assert "password authentication failed" in r.stderr and "not-the-password" not in r.stderr + r.stdout
    down = postgres_url.replace(f":{postgres_server.port}/", ":1/")
    r = check(down, LION_STORE_PASSWORD=password)
    assert r.returncode == 1 and "cannot connect" in r.stderr and "Traceback" not in r.stderr
    r = check(postgres_url.replace("lion@", f"lion:{password}@"), LION_STORE_PASSWORD=password)
    assert r.returncode == 1 and "storage.response_store: the URL carries a password" in r.stderr
    assert password not in r.stderr + r.stdout
    r = check("postgresql:///nohost")
    assert r.returncode == 1 and "names no host" in r.stderr
