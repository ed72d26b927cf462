"""The Lion flow end to end under a Prefect test API: a tiny run, and a resume after an API outage."""

import json
import os
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
from prefect import get_client

from flows.lion import lion
from lion_core.errors import EndpointDown
from lion_core.llm.responses import ResponseStore
from lion_core.report import summary_markdown
from lion_core.store import RunStore
from tests.fault_server import FaultPlan, FaultServer
from tests.flows.conftest import KEY_ENV, SECRET, load_json, pool_rows, write_flow_config
from tests.helpers import task_runs

pytestmark = pytest.mark.slow


def test_the_api_key_reaches_no_file_result_artifact_or_log(uninterrupted):
    import prefect.settings

    db = prefect.settings.PREFECT_SERVER_DATABASE_CONNECTION_URL.value().split("///", 1)[1]
    places = [uninterrupted["folder"], Path(os.environ["PREFECT_LOCAL_STORAGE_PATH"]), Path(db).parent]
    for _ in range(20):
        files = [p for place in places for p in Path(place).rglob("*") if p.is_file()]
        try:
            contents = {p: p.read_bytes() for p in files}
            break
        except FileNotFoundError:  # a SQLite write-ahead log was merged into its database meanwhile: scan again
            time.sleep(0.5)
    else:
        raise AssertionError("the files kept changing while they were read")
    assert any(p.suffix == ".parquet" for p in files) and any(p.name.startswith(Path(db).name) for p in files)
    leaked = [str(p) for p, data in contents.items() if SECRET.encode() in data]
    assert leaked == []


def test_the_ui_shows_runs_by_readable_names(uninterrupted):
    with get_client(sync_client=True) as client:
        flows = {r.name for r in client.read_flow_runs(limit=200)}
        tasks = {r.name for r in client.read_task_runs(limit=200)}
    assert {"lion-ref", "ref-iter-0", "ref-iter-1", "iter-0-imitation", "iter-0-discrimination", "iter-0-generation",
            "iter-1-imitation", "iter-2-final-imitation", "iter-2-imitation"} <= flows, flows
    assert {"teacher_answers_train-shard-00", "teacher_answers_cache-shard-00", "referee-shard-00", "iter-0-generator",
            "iter-0-train-student", "iter-0-student_answers", "iter-0-merge-judgments", "iter-0-update-pools",
            "iter-0-report", "final-checkpoint", "final-report", "open-ref"} <= tasks, tasks


def test_a_tiny_run_goes_through_two_iterations(uninterrupted):
    folder, result = uninterrupted["folder"], uninterrupted["result"]
    store = RunStore(str(folder / "runs"), "ref")
    assert store.iterations() == [0, 1, 2]
    assert [s.iteration for s in result.iterations] == [0, 1]
    for s in result.iterations:
        k = s.iteration
        m = store.manifest(k).files
        assert {"teacher_answers_train", "teacher_answers_cache", "student_answers", "judgments", "candidates"} <= set(m)
        assert s.judged == s.cache_pool and s.hard + s.easy + s.unresolved == s.judged - s.missing_answer
        assert s.next_train_pool == s.accepted and s.next_cache_pool == s.cache_pool + s.accepted
        assert store.manifest(k + 1).files["cache_pool"].rows == s.next_cache_pool
        for name, uri in s.plots.items():
            assert open(uri, "rb").read(8) == b"\x89PNG\r\n\x1a\n", name
        assert (folder / "runs" / "ref" / "checkpoints" / f"iter-{k}" / "final" / ".complete").is_file()
        assert s.checkpoint.endswith(f"iter-{k}/final")
        json.dumps(s.model_dump(mode="json"))  # the summary is plain data
    # iteration 1 trains on iteration 0's new instructions, starting from iteration 0's checkpoint
    info = json.loads((folder / "runs" / "ref" / "checkpoints" / "iter-1" / "final" / "lion_checkpoint.json").read_text())
    assert "iter-0/final" in json.dumps(info)


def test_the_report_shows_every_path_of_the_method(uninterrupted):
    """Verdicts with 0 scores, generation budgets, fresh draws per iteration, the Figure 3 chart."""
    first, second = uninterrupted["result"].iterations
    for s in (first, second):
        assert s.hard > 0 and s.easy > 0 and s.unresolved == 0  # the loopback referee gives verdicts
        assert s.accepted > 0 and s.checkpoint_status == "trained"
        assert s.fresh_draws == s.generation_requests and s.stored_draws == 0  # every draw new
        candidates = RunStore(str(uninterrupted["folder"] / "runs"), "ref").table(s.iteration, "candidates")
        truncated = sum(r == "truncated" for r in candidates.column("reason").to_pylist())
        assert sum(s.truncated_by_reason.values()) == truncated == s.rejected_by_reason.get("truncated", 0)
        assert sum(f.requests for f in s.by_seed_input.values()) == s.generation_requests
        assert open(s.plots["instruction_types"], "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert first.zero_scores + second.zero_scores > 0  # a 0 is a verdict, kept
    md = summary_markdown(second)
    assert "draws:" in md and "truncated replies by reason" in md and "scores of 0" in md


def test_the_last_train_pool_is_trained_into_the_final_checkpoint(uninterrupted):
    from transformers import AutoTokenizer

    from lion_core.checkpoints import CARD, checkpoint_record
    from lion_core.prompts import student_prompt

    folder, result = uninterrupted["folder"], uninterrupted["result"]
    store = RunStore(str(folder / "runs"), "ref")
    final = folder / "runs" / "ref" / "checkpoints" / "final"
    assert result.final_checkpoint == str(final) and (final / ".complete").is_file()
    last = result.iterations[-1]
    # the instructions the last generation paid for are answered by the teacher and trained on
    assert store.ref(2, "teacher_answers_train").rows == last.next_train_pool > 0
    assert checkpoint_record(store, 2).status == "trained"
    info = result.final
    assert info["status"] == "trained" and info["iteration"] == 2 and info["train_rows"] == last.next_train_pool
    trained_on = json.loads((final / "lion_checkpoint.json").read_text())["train_data"]
    assert trained_on["sha256"] == store.ref(2, "teacher_answers_train").sha256
    tok = AutoTokenizer.from_pretrained(final)
    rendered = tok.apply_chat_template([{"role": "user", "content": "Sort these.", "input": "b a"}], tokenize=False,
                                       add_generation_prompt=True)
    assert rendered == student_prompt("Sort these.", "b a")
    card = (final / CARD).read_text()
    assert "final Train Pool" in card and "| 2 | " in card and store.read_run_info()["config_hash"] in card


def test_the_ui_gets_a_report_per_iteration(uninterrupted):
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey, ArtifactFilterType

    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(like_="lion-ref-")))
        progress = client.read_artifacts(artifact_filter=ArtifactFilter(type=ArtifactFilterType(any_=["progress"])),
                                         limit=200)
    # every sharded stage reports its progress, and it ends at 100%
    finished = [a for a in progress if "judgments" in (a.description or "")]
    assert finished and all(a.data == 100.0 for a in finished)
    by_key = {a.key: a for a in arts}
    final = by_key["lion-ref-final"]  # the deliverable has its report too, with the final imitation's cost
    assert final.type == "markdown" and "final Train Pool of iteration 2" in final.data and "| teacher |" in final.data
    for k in (0, 1):
        md = by_key[f"lion-ref-iter-{k}"]
        assert md.type == "markdown" and "Discrimination" in md.data and "Cache Pool" in md.data
        assert md.data.count("](data:image/png;base64,") == 4  # every chart, Figure 3 included, shows in the UI
        assert by_key[f"lion-ref-iter-{k}-table"].type == "table"
        for chart in ("score-gap", "hard-fraction", "leading-words", "instruction-types"):
            link = by_key[f"lion-ref-iter-{k}-{chart}"].data  # a link artifact, stored as markdown
            assert f"iter-{k}/plots/{chart.replace('-', '_')}.png" in link and "file://" in link


def test_resume_after_an_outage_sends_nothing_twice_and_ends_with_the_same_pools(uninterrupted, tiny_model,
                                                                                 tmp_path):
    folder = tmp_path / "resumed"
    # 6 teacher answers (the Cache Pool's are the same requests), then the referee fails after 5 verdicts
    with FaultServer(FaultPlan(fail_after=11)) as api:
        # one iteration: the outage and the resume are in iteration 0; the uninterrupted run's iteration 1
        # is where the next iteration's behaviour is checked
        config = write_flow_config(folder, api.url, tiny_model, api_key_env=KEY_ENV, iterations=1)
        started = datetime.now(timezone.utc)
        with pytest.raises(EndpointDown, match="retry.max_outage_s"):
            lion(config_path=str(config), run_id="ref")
        first_answered = sum(api.stats.answered.values())
        assert first_answered == 11
        store = RunStore(str(folder / "runs"), "ref")
        assert "judgments" not in store.manifest(0).files  # nothing half-done is visible
        assert store.manifest(1) is None
        with ResponseStore(str(folder / "responses.sqlite")) as rs:
            assert rs.counts().get("failed", 0) == 0  # an outage is not the requests' failure

        completed_first = task_runs(since=started)
        api.plan = FaultPlan()  # the API is back
        resumed = datetime.now(timezone.utc)  # every task run from here on belongs to the resumed run
        result = lion(config_path=str(config), run_id="ref")
        resumed_answered = sum(api.stats.answered.values()) - first_answered

    # every request was answered once in all: as many answers as the uninterrupted run needed for one iteration
    assert max(api.stats.answered.values()) == 1
    assert first_answered + resumed_answered == uninterrupted["answered_one_iteration"]
    # every task that completed before the outage was a cache hit on resume
    second = task_runs(since=resumed)
    done_before = completed_first["completed_keys"]
    assert done_before and done_before <= second["cached_keys"]
    assert not (done_before & second["completed_keys"])
    # and the run ends where the uninterrupted one was after its iteration 0
    assert [s.iteration for s in result.iterations] == [0]
    ref_runs = uninterrupted["folder"] / "runs"
    for name in ("train_pool", "cache_pool"):
        assert pool_rows(folder / "runs", "ref", 1, name) == pool_rows(ref_runs, "ref", 1, name), name


def test_teacher_referee_and_generator_in_batch_mode_end_with_the_interactive_pools(uninterrupted, tiny_model,
                                                                                   tmp_path):
    folder = tmp_path / "batched"
    batch = {"mode": "batch", "batch": {"poll_interval_s": 0.2, "max_requests_per_batch": 5}}
    started = datetime.now(timezone.utc)
    with FaultServer(FaultPlan(api_key=SECRET, batch_complete_after_s=0.5)) as api:
        config = write_flow_config(folder, api.url, tiny_model, api_key_env=KEY_ENV, iterations=1,
                                   roles={role: batch for role in ("teacher", "referee", "generator")})
        result = lion(config_path=str(config), run_id="ref")
    # every answer came through a batch, none from a chat call, and each was paid for once
    assert sum(api.stats.answered.values()) == 0 and api.stats.outcomes["401"] == 0
    assert sum(api.stats.batch_answered.values()) == uninterrupted["answered_one_iteration"]
    assert max(api.stats.batch_answered.values()) == 1 and api.stats.batches_created >= 4
    ref_runs = uninterrupted["folder"] / "runs"
    for name in ("train_pool", "cache_pool"):
        assert pool_rows(folder / "runs", "ref", 1, name) == pool_rows(ref_runs, "ref", 1, name), name
    def verdicts(runs, k):
        return [(r["id"], r["label"], r["d"]) for r in RunStore(str(runs), "ref").table(k, "judgments").to_pylist()]

    assert verdicts(folder / "runs", 0) == verdicts(ref_runs, 0)
    # accounted as batch calls, per role
    usage = {(u.role, u.mode): u for u in result.iterations[0].usage_by_role}
    for role in ("teacher", "referee", "generator"):
        assert usage[(role, "batch")].calls > 0 and usage[(role, "batch")].prompt_tokens > 0, role
        assert (role, "interactive") not in usage or usage[(role, "interactive")].calls == 0, role
    # the UI saw the batches' progress
    with get_client(sync_client=True) as client:
        from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterType

        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(type=ArtifactFilterType(any_=["progress"])))
    seen = [a.description for a in artifacts if a.created >= started and "batches" in (a.description or "")]
    assert any("iteration 0 referee discrimination batches: done" in d for d in seen), seen


def test_the_exported_dataset_round_trips_through_datasets_with_the_pools_rows_and_counts(uninterrupted, tmp_path):
    """The `lion-export` flow on the finished two-iteration run: `datasets` loads the folder with every row of
    the last Cache Pool (seeds, hard and easy generations, the iteration each entered), the teacher's answers
    and the referee's scores of every iteration; the card's YAML header parses; a push without a reachable
    Hub fails clearly and leaves the files as they were."""
    from collections import Counter

    import yaml
    from datasets import load_dataset

    from flows.export import export
    from lion_core.dataset_export import DATA_FILE, push_to_hub
    from lion_core.errors import LionError
    from lion_core.llm.embedded import free_port

    folder = uninterrupted["folder"]
    store = RunStore(str(folder / "runs"), "ref")
    out = tmp_path / "dataset"
    done = export(config_path=str(folder / "lion.yaml"), run_id="ref", out=str(out))
    rows = load_dataset("parquet", data_dir=str(out), cache_dir=str(tmp_path / "hf-cache"))["train"].to_list()
    pool = pool_rows(folder / "runs", "ref", 2, "cache_pool")
    assert [{k: r[k] for k in pool[0]} for r in rows] == pool
    assert {"seed", "hard", "easy"} <= {r["origin"] for r in rows} and {0, 1, 2} <= {r["iteration"] for r in rows}
    assert done.rows == len(pool) and done.by_origin == dict(sorted(Counter(r["origin"] for r in pool).items()))
    assert done.by_iteration == dict(sorted(Counter(r["iteration"] for r in pool).items()))
    teacher = {}
    for k in (0, 1, 2):
        for name in ("teacher_answers_train", "teacher_answers_cache"):
            if name in store.manifest(k).files:
                teacher.update({r["id"]: r["answer"] for r in store.table(k, name).to_pylist() if r["status"] == "ok"})
    assert all(r["output"] == teacher[r["id"]] and r["answer_status"] == "ok" for r in rows)
    assert done.answered == len(rows)
    verdicts = {k: {r["id"]: r for r in store.table(k, "judgments").to_pylist()} for k in (0, 1)}
    for r in rows:
        judged_in = [k for k in (0, 1) if r["id"] in verdicts[k]]
        assert [j["iteration"] for j in r["judgments"]] == judged_in == list(range(r["iteration"], 2))
        if judged_in:
            last = verdicts[judged_in[-1]][r["id"]]
            assert (r["judged_iteration"], r["label"], r["score_gap"]) == (judged_in[-1], last["label"], last["d"])
        else:  # entered with the last generation: answered, never judged
            assert r["label"] is None and r["judged_iteration"] is None
    card = (out / "README.md").read_text()
    header = yaml.safe_load(card.split("---\n")[1])
    assert header["license"] == "other" and header["size_categories"] == ["n<1K"]
    assert header["task_categories"] == ["text-generation"] and header["language"] == ["en"]
    assert header["configs"][0]["data_files"][0]["path"] == "data/train-*.parquet"
    config = load_json(out / "lion_dataset.json")
    assert f"config hash `{config['config_hash']}`" in card and "fake-model" in card and "| hard |" in card
    with get_client(sync_client=True) as client:
        assert client.read_artifacts(limit=200) and any(a.key == "lion-ref-dataset" for a in client.read_artifacts(limit=200))
    before = (out / DATA_FILE).read_bytes()
    with pytest.raises(LionError, match="could not push .* The export on disk is complete"):
        push_to_hub(out, "someone/lion-ref", endpoint=f"http://127.0.0.1:{free_port()}")
    assert (out / DATA_FILE).read_bytes() == before and (out / "README.md").read_text() == card
    # a repeated export replaces its own folder; any other folder is left alone
    assert export(config_path=str(folder / "lion.yaml"), run_id="ref", out=str(out)).sha256 == done.sha256
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(LionError, match="already holds other files"):
        export(config_path=str(folder / "lion.yaml"), run_id="ref", out=str(other))
    assert [p.name for p in other.iterdir()] == ["notes.txt"]


def test_the_export_commands_work_from_the_run_id_alone(uninterrupted, tmp_path):
    """`lion export-dataset` and `lion export-model` as a user runs them, given the run id and its runs root
    (the config is the one the run recorded); a target that holds something else is refused with exit 1."""
    import subprocess
    import sys

    from transformers import AutoModelForCausalLM

    def lion_cli(*args):
        return subprocess.run([str(Path(sys.executable).parent / "lion"), *map(str, args)], capture_output=True, text=True,
                              timeout=300, env={**os.environ, "PYTHONWARNINGS": "ignore"})

    runs = uninterrupted["folder"] / "runs"
    r = lion_cli("export-dataset", "ref", "--runs-root", runs, "--out", tmp_path / "data", "--license", "cc-by-nc-4.0")
    assert r.returncode == 0, r.stderr
    rows = RunStore(str(runs), "ref").manifest(2).files["cache_pool"].rows
    assert f"{rows} instructions" in r.stdout and (tmp_path / "data" / "data" / "train-00000-of-00001.parquet").is_file()
    assert "license: cc-by-nc-4.0" in (tmp_path / "data" / "README.md").read_text()
    r = lion_cli("export-model", "ref", "--runs-root", runs, "--out", tmp_path / "model", "--merge")
    assert r.returncode == 0, r.stderr
    assert "full model" in r.stdout and "no adapter to merge" in r.stdout
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "model") is not None
    assert not (tmp_path / "model" / ".complete").exists()
    r = lion_cli("export-model", "ref", "--runs-root", runs, "--out", tmp_path / "model")
    assert r.returncode == 1 and "already exists and is not empty" in r.stderr and "Traceback" not in r.stderr
    r = lion_cli("export-model", "nope", "--runs-root", runs, "--out", tmp_path / "other")
    assert r.returncode == 1 and "no run 'nope'" in r.stderr and not (tmp_path / "other").exists()


@pytest.fixture(scope="module")
def lora_evaluated(prefect_harness, tiny_model, tmp_path_factory):
    """One iteration with a LoRA student and the after-run evaluation: the schedule both tests below read."""
    folder = tmp_path_factory.mktemp("lora")
    questions = folder / "questions.jsonl"
    questions.write_text("".join(json.dumps({"question_id": i, "text": t, "category": "c"}) + "\n"
                                 for i, t in enumerate(["Why is ice slippery?", "Name a prime.", "Say hello."])))
    with FaultServer(FaultPlan()) as api:
        config = write_flow_config(folder, api.url, tiny_model, iterations=1,
                                   training={"method": "lora", "lora": {"rank": 4, "alpha": 8}},
                                   evaluation={"eval_set": str(questions), "after_run": True, "min_coverage": 0.5})
        result = lion(config_path=str(config), run_id="lora")
    return {"folder": folder, "result": result}


def test_a_lora_student_goes_through_the_loop_on_adapters(lora_evaluated, tiny_model, tmp_path):
    """`training.method: lora` in the same schedule: every checkpoint is an adapter of the base, the next
    fine-tune continues the previous adapter, the student answers discrimination through it, and the
    final one exports merged."""
    from lion_core.model_export import export_model
    from lion_core.student.lora import is_adapter
    from lion_core.student.models import checkpoint_info

    folder, result = lora_evaluated["folder"], lora_evaluated["result"]
    ckpts = folder / "runs" / "lora" / "checkpoints"
    assert all(is_adapter(p) for p in (ckpts / "iter-0" / "final", ckpts / "iter-1" / "final", ckpts / "final"))
    info = checkpoint_info(ckpts / "iter-1" / "final")
    assert info["base_model"].endswith("iter-0/final") and info["adapter_base"] == str(tiny_model)
    answered = RunStore(str(folder / "runs"), "lora").table(0, "student_answers").to_pylist()
    assert answered and all(r["status"] == "ok" for r in answered)
    assert result.iterations[0].judged == result.iterations[0].cache_pool
    assert "library_name: peft" in (ckpts / "final" / "README.md").read_text()
    merged = export_model(ckpts / "final", tmp_path / "merged", merge=True)
    assert merged.kind == "merged" and (tmp_path / "merged" / "model.safetensors").is_file()


@pytest.fixture(scope="module")
def silent_model(tiny_model, tmp_path_factory):
    """The tiny student, made to say nothing: every token but end-of-sequence is suppressed."""
    import shutil

    from transformers import AutoTokenizer, GenerationConfig

    out = tmp_path_factory.mktemp("silent") / "model"
    shutil.copytree(tiny_model, out)
    tok = AutoTokenizer.from_pretrained(out)
    GenerationConfig(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                     suppress_tokens=[i for i in range(len(tok)) if i != tok.eos_token_id]).save_pretrained(out)
    return out


def test_a_silent_student_is_hard_everywhere_and_an_empty_pool_carries_the_checkpoint(prefect_harness, silent_model,
                                                                                      tmp_path):
    from lion_core.checkpoints import EMPTY_TRAIN_POOL, checkpoint_record

    folder = tmp_path / "silent"
    with FaultServer(FaultPlan(generator_refuses=True)) as api:
        config = write_flow_config(folder, api.url, silent_model)
        result = lion(config_path=str(config), run_id="silent")
    first, second = result.iterations
    # every answer is empty: every item is hard, with its reason, and no referee call was paid for it
    assert first.hard == first.hard_empty_answer == first.cache_pool and first.easy == 0
    assert not any("<<<ANSWER OF ASSISTANT 1>>>" in m for m in api.stats.successes)
    # the generator declined everything: iteration 1 has nothing to train on and carries iteration 0's checkpoint
    assert first.accepted == 0 and second.train_pool == 0
    store = RunStore(str(folder / "runs"), "silent")
    iter0 = "run://silent/checkpoints/iter-0/final"  # valid wherever the run folder goes
    assert store.resolve(iter0) == str(folder / "runs" / "silent" / "checkpoints" / "iter-0" / "final")
    assert checkpoint_record(store, 0).status == "trained"
    assert checkpoint_record(store, 1).model_dump() == {"path": iter0, "status": "carried", "source_iteration": 0,
                                           "reason": EMPTY_TRAIN_POOL, "train_rows": 0}
    assert second.checkpoint == iter0 and second.checkpoint_status == "carried"
    assert "carried from iteration 0" in summary_markdown(second)
    # the final Train Pool is empty too: the final checkpoint is iteration 0's, published with the reason
    final = folder / "runs" / "silent" / "checkpoints" / "final"
    assert result.final["status"] == "carried" and result.final["source_iteration"] == 0
    assert (final / ".complete").is_file() and (final / "config.json").is_file()
    assert "carried from iteration 0" in (final / "README.md").read_text()


def test_after_run_the_base_every_checkpoint_and_the_final_one_are_evaluated(lora_evaluated):
    """The base, each iteration's checkpoint and the final one are scored after the run (here adapters,
    each answered through the base it extends)."""
    from lion_core.report import summary_text_table

    folder, result = lora_evaluated["folder"], lora_evaluated["result"]
    evaluation = result.evaluation
    assert evaluation.eval_id == "lora-eval"
    # iteration 0's checkpoint and the final one (trained on the last Train Pool), besides the base
    assert set(evaluation.scores) == {"base", 0, "final"}
    for s in evaluation.scores.values():
        assert s["relative_score"] is not None
        lo, hi = s["relative_score_ci95"]
        assert lo <= s["relative_score"] <= hi
    scores = RunStore(str(folder / "runs" / "evaluations"), "lora-eval").table(0, "scores").to_pylist()
    assert {r["checkpoint"] for r in scores} == {"base", "lora-iter-0", "lora-final"}
    table = summary_text_table(result.iterations, evaluation.scores).splitlines()
    assert "rel. score" in table[0] and table[1].startswith(" base") and table[-1].startswith("final")
