"""The entry point: the installed script, and how errors end a command (lion_cli.main)."""

from tests.lion_cli.lion_script import LION, lion


def test_script_is_installed():
    assert LION.exists()


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


def test_usage_error_exits_nonzero():
    r = lion("init")
    assert r.returncode == 2 and "--config" in r.stderr
