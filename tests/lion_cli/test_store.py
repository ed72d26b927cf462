"""`lion init`, `lion pools show` (lion_cli.store); `lion dedup` is tested with lion_core.generation.dedup."""

import json

from tests.lion_cli.lion_script import REPO, lion


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
