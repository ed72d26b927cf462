import json
import uuid

import fsspec
import pytest

from lion_core.config import RunConfig, parse_config
from lion_core.errors import ConfigError, SeedError, StoreError
from lion_core.runs import describe_run, init_run
from lion_core.store import RunStore


def _config(runs_root) -> RunConfig:
    return parse_config({"storage": {"runs_root": str(runs_root)}})


def _seed_file(tmp_path, n=5):
    p = tmp_path / "seeds.jsonl"
    p.write_text("".join(json.dumps({"instruction": f"Task {i}: write something.", "input": ""}) + "\n" for i in range(n)))
    return str(p)


def test_init_creates_iteration_zero_with_equal_pools(tmp_path):
    cfg = _config(tmp_path / "runs")
    res = init_run(cfg, _seed_file(tmp_path), run_id="r1")
    store = RunStore(cfg.storage.runs_root, "r1")
    train, cache = store.read_pool(res.train_pool), store.read_pool(res.cache_pool)
    assert len(train) == 5 and train.equals(cache)
    assert store.iterations() == [0]
    assert store.ref(0, "train_pool") == res.train_pool
    info = store.read_run_info()
    assert info["config_hash"] == cfg.config_hash() and info["seed"]["records_read"] == 5


def test_init_refuses_an_existing_run(tmp_path):
    cfg = _config(tmp_path / "runs")
    init_run(cfg, _seed_file(tmp_path), run_id="r1")
    with pytest.raises(StoreError, match="run 'r1' already exists"):
        init_run(cfg, _seed_file(tmp_path, 3), run_id="r1")
    assert len(RunStore(cfg.storage.runs_root, "r1").table(0, "train_pool").to_pandas()) == 5


def test_bad_seed_writes_nothing(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "fine"}\n{"instruction": ""}\n')
    with pytest.raises(SeedError):
        init_run(_config(tmp_path / "runs"), str(bad), run_id="r1")
    assert not (tmp_path / "runs").exists()


def test_no_seed_anywhere_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="--seed or set data.seed"):
        init_run(_config(tmp_path / "runs"), None, run_id="r1")


def test_seed_from_config(tmp_path):
    cfg = parse_config({"storage": {"runs_root": str(tmp_path / "runs")}, "data": {"seed": _seed_file(tmp_path, 2)}})
    assert init_run(cfg, run_id="r1").train_pool.rows == 2


def test_generated_run_ids_are_unique(tmp_path):
    cfg = _config(tmp_path / "runs")
    seeds = _seed_file(tmp_path)
    assert init_run(cfg, seeds).run_id != init_run(cfg, seeds).run_id


def test_init_retried_after_a_crash_before_run_json(tmp_path, monkeypatch):
    cfg = _config(tmp_path / "runs")

    def crash(self, extra=None):
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(RunStore, "write_run_info", crash)
    with pytest.raises(KeyboardInterrupt):
        init_run(cfg, _seed_file(tmp_path), run_id="r1")
    monkeypatch.undo()
    res = init_run(cfg, _seed_file(tmp_path), run_id="r1")  # same command again completes the run
    assert res.train_pool.rows == 5


def test_run_on_memory_filesystem(tmp_path):
    root = f"memory://lion-runs-{uuid.uuid4().hex[:8]}"
    cfg = parse_config({"storage": {"runs_root": root, "response_store": str(tmp_path / "responses.sqlite"),
                                    "checkpoints_root": str(tmp_path / "checkpoints")}})
    res = init_run(cfg, _seed_file(tmp_path), run_id="m1")
    assert RunStore(root, "m1").resolve(res.train_pool.uri).startswith(root)
    desc = describe_run(root, "m1")
    assert [f["verified"] for f in desc["iterations"][0]["files"]] == [True, True]
    fsspec.filesystem("memory").rm(root.removeprefix("memory://"), recursive=True)


def test_describe_reports_origins_lineage_and_tampering(tmp_path):
    cfg = _config(tmp_path / "runs")
    res = init_run(cfg, _seed_file(tmp_path), run_id="r1")
    desc = describe_run(cfg.storage.runs_root, "r1")
    files = {f["name"]: f for f in desc["iterations"][0]["files"]}
    assert files["train_pool"]["origins"] == {"seed": 5}
    assert files["train_pool"]["parents"][0]["uri"].endswith("seeds.jsonl")
    assert all(f["verified"] for f in files.values())
    with open(RunStore(cfg.storage.runs_root, "r1").resolve(res.cache_pool.uri), "r+b") as fh:  # flip bytes in the middle
        fh.seek(100)
        fh.write(b"\x00\x01\x02")
    files = {f["name"]: f for f in describe_run(cfg.storage.runs_root, "r1")["iterations"][0]["files"]}
    assert files["train_pool"]["verified"] and not files["cache_pool"]["verified"]
    assert "sha256 mismatch" in files["cache_pool"]["error"]


def test_describe_unknown_run(tmp_path):
    with pytest.raises(StoreError, match="no run 'nope'"):
        describe_run(str(tmp_path), "nope")


def test_alpaca_52k_is_stored_and_read_back_verified(tmp_path, shared_data):
    cfg = _config(tmp_path / "runs")
    src = shared_data / "stanford_alpaca" / "alpaca_data_52k_en_via_open-chinese.parquet"
    res = init_run(cfg, str(src), run_id="alpaca")
    assert res.train_pool.rows == res.cache_pool.rows == 52002
    df = RunStore(cfg.storage.runs_root, "alpaca").table(0, "cache_pool").to_pandas()
    assert len(df) == 52002 and df["id"].is_unique
    assert df["instruction"].iloc[0] == "Give three tips for staying healthy."


def _with(cfg: RunConfig, **sections) -> RunConfig:
    data = cfg.to_json_dict()
    for dotted, value in sections.items():
        *parents, leaf = dotted.split("__")
        node = data
        for name in parents:
            node = node.setdefault(name, {})
        node[leaf] = value
    return parse_config(data)


def test_a_resume_may_change_operations_and_records_them(tmp_path):
    from lion_core.runs import check_resume

    cfg = _config(tmp_path / "runs")
    init_run(cfg, _seed_file(tmp_path), run_id="r1")
    store = RunStore(cfg.storage.runs_root, "r1")
    assert check_resume(store, cfg) == [] and not (tmp_path / "runs" / "r1" / "resumes.json").exists()
    ops = _with(cfg, teacher__rate_limits={"requests_per_minute": 250, "tokens_per_minute": 200_000, "max_concurrency": 16},
                orchestration__task_retries=4, orchestration__max_parallel_tasks=5,
                referee__base_url="https://judge.example/v1", referee__api_key_env="JUDGE_KEY")
    assert ops.config_hash() == cfg.config_hash()
    changed = check_resume(store, ops)
    assert ("teacher.rate_limits.requests_per_minute", 500, 250) in changed
    assert ("orchestration.task_retries", 3, 4) in changed and ("orchestration.max_parallel_tasks", 4, 5) in changed
    history = json.loads((tmp_path / "runs" / "r1" / "resumes.json").read_text())
    assert len(history) == 1 and {c["field"] for c in history[0]["changed"]} == {p for p, _, _ in changed}


def test_a_resume_that_changes_results_is_refused_naming_every_field(tmp_path):
    from lion_core.runs import check_resume

    cfg = _config(tmp_path / "runs")
    init_run(cfg, _seed_file(tmp_path), run_id="r1")
    other = _with(cfg, teacher__model="gpt-4o", teacher__base_url="https://api.example/v1", loop__tau=2.0,
                  training__learning_rate=1e-4)
    assert other.config_hash() != cfg.config_hash()
    with pytest.raises(ConfigError) as err:
        check_resume(RunStore(cfg.storage.runs_root, "r1"), other)
    msg = str(err.value)
    assert "3 field(s)" in msg
    for line in ("teacher.model: 'smollm2-135m-instruct' -> 'gpt-4o'", "loop.tau: 1.0 -> 2.0",
                 "training.learning_rate: 2e-05 -> 0.0001"):
        assert line in msg, msg
    assert not (tmp_path / "runs" / "r1" / "resumes.json").exists()


def test_a_run_recorded_before_newer_fields_existed_still_resumes(tmp_path):
    """run.json of a run made by an older version lacks `training.method` and `training.lora`: read with
    their defaults (full fine-tuning, as it was made) it resumes; asking it for LoRA is refused."""
    from lion_core.runs import check_resume

    cfg = _config(tmp_path / "runs")
    init_run(cfg, _seed_file(tmp_path), run_id="r1")
    run_json = tmp_path / "runs" / "r1" / "run.json"
    info = json.loads(run_json.read_text())
    del info["config"]["training"]["method"], info["config"]["training"]["lora"]
    run_json.write_text(json.dumps(info))
    store = RunStore(cfg.storage.runs_root, "r1")
    assert check_resume(store, cfg) == []
    with pytest.raises(ConfigError, match="training.method: None -> 'lora'|training.method: 'full' -> 'lora'"):
        check_resume(store, _with(cfg, training__method="lora"))


def test_a_repeated_resume_with_the_same_changes_is_recorded_once(tmp_path):
    from lion_core.runs import check_resume, read_resumes

    cfg = _config(tmp_path / "runs")
    init_run(cfg, _seed_file(tmp_path), run_id="r1")
    store = RunStore(cfg.storage.runs_root, "r1")
    ops = _with(cfg, orchestration__task_retries=5)
    check_resume(store, ops)
    check_resume(store, ops)
    assert len(read_resumes(store)) == 1
    check_resume(store, _with(cfg, orchestration__task_retries=6))
    assert [r["changed"][0]["new"] for r in read_resumes(store)] == [5, 6]


def test_a_run_is_held_by_one_process_at_a_time(tmp_path):
    """A second process is refused while the first lives, with who holds it; the kernel frees the lock
    when the holder dies, even by SIGKILL."""
    import signal
    import subprocess
    import sys

    from lion_core.runs import RunLocked, run_lock

    config = RunConfig.model_validate({"storage": {"runs_root": str(tmp_path / "runs")}})
    code = ("import sys, time; from lion_core.config import RunConfig; from lion_core.runs import run_lock\n"
            f"c = RunConfig.model_validate({{'storage': {{'runs_root': {str(tmp_path / 'runs')!r}}}}})\n"
            "with run_lock(c, 'r1', owner='flow-a'):\n    print('held', flush=True); time.sleep(600)\n")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunLocked, match=rf"run r1 is already running \(pid {holder.pid} on "):
            with run_lock(config, "r1", owner="flow-b"):
                pass
        with run_lock(config, "r2", owner="flow-b") as other:  # another run is not held
            assert other.previous_owner is None
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with run_lock(config, "r1", owner="flow-b") as held:
        assert held.path.endswith("r1.lock")
        assert held.previous_owner == "flow-a"  # the dead holder, for the resume to close
