"""`lion run --preview N` (lion_cli.preview, lion_core.preview): the first N seeds through every stage as a
run of its own against a loopback API, shown as the run sent and got them, then the full run's projection."""

import json
import re
import sqlite3

import pytest

from tests.fault_server import FaultPlan, FaultServer
from tests.flows.conftest import write_flow_config
from tests.lion_cli.lion_script import lion

PRICE = {"prompt_per_million": 1000.0, "completion_per_million": 2000.0}  # dear enough to show in cents


def _flat(text: str) -> str:
    return " ".join(text.split())


def _columns(out: str) -> tuple[str, str]:
    """The left (sent) and right (received) columns of the side-by-side blocks, each as one flat text."""
    pairs = [line.split(" │", 1) for line in out.splitlines() if " │" in line]
    return _flat(" ".join(p[0] for p in pairs)), _flat(" ".join(p[1] for p in pairs))


@pytest.mark.slow
def test_a_preview_is_a_run_of_n_seeds_shown_as_sent_and_received_with_the_full_runs_projection(
        prefect_harness, tiny_model, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from lion_cli.main import app
    from lion_core.store import RunStore

    monkeypatch.setenv("PREFECT_API_URL", prefect_harness.url)  # the session's API, not a new local one
    monkeypatch.setenv("PREFECT_LOGGING_EXTRA_LOGGERS", "lion")  # as prefect_setup sets it, undone after the test
    with FaultServer(FaultPlan()) as api:
        config = write_flow_config(tmp_path, api.url, tiny_model, n_seeds=8, iterations=2,
                                   roles={r: {"price": PRICE} for r in ("teacher", "referee", "generator")})
        r = CliRunner().invoke(app, ["run", "--config", str(config), "--preview", "3"])
    assert r.exit_code == 0, (r.output[-3000:], r.exception)
    out = r.stdout
    run_id = re.search(r"^preview (preview-\S+):", out, re.M).group(1)

    # a run of its own, on exactly the first 3 seeds, one iteration, no evaluation
    store = RunStore(str(tmp_path / "runs"), run_id)
    seeds = [json.loads(line) for line in (tmp_path / "seeds.jsonl").read_text().splitlines()]
    assert [c["instruction"] for c in store.table(0, "cache_pool").to_pylist()] == [s["instruction"] for s in seeds[:3]]
    info = store.read_run_info()["config"]
    assert info["loop"]["iterations"] == 1 and info["loop"]["new_instructions_per_iteration"] == 3
    assert store.manifest(2) is None

    sent, received = _columns(out)
    # the teacher's replies as the loopback server wrote them, beside the prompts that drew them
    teacher = store.table(0, "teacher_answers_train").to_pylist()
    assert len(teacher) == 3 and all(t["answer"].startswith("Answer to: ") for t in teacher)
    for t in teacher:
        assert _flat(t["answer"]) in received
        assert _flat(t["instruction"]) in sent
    # the referee's raw replies and the verdicts parsed from them
    judged = [j for j in store.table(0, "judgments").to_pylist() if j["d"] is not None]
    assert judged
    for j in judged:
        assert _flat(j["raw_t_first"]) in received and _flat(j["raw_s_first"]) in received
        assert f"d = {j['d']:g} {'≥' if j['d'] >= 1 else '<'} tau 1 → {j['label']}" in out
    # the generator's draws, and the new instructions they became
    accepted = [c for c in store.table(0, "candidates").to_pylist() if c["status"] == "accepted"]
    assert accepted
    for c in accepted:
        assert f"→ accepted: {c['instruction']}" in out
    assert all(_flat(c["raw"]) in received for c in store.table(0, "candidates").to_pylist())
    # the full run: its own seeds and iterations, planned with the reply lengths, re-asks and acceptance the
    # preview observed (its response store holds this run's requests only)
    from lion_core.config import load_config
    from lion_core.planning import Assumptions, make_plan
    from lion_core.seeds import load_seeds

    with sqlite3.connect(tmp_path / "responses.sqlite") as db:
        replies = dict(db.execute("SELECT role, AVG(completion_tokens) FROM responses WHERE status = 'ok' GROUP BY role"))
    draws = store.table(0, "candidates").num_rows
    assert f"teacher replies {round(replies['teacher'])} tokens (mean of 6)" in out  # 3 seeds, then 3 new ones
    assert f"referee replies {round(replies['referee'])} tokens" in out
    assert f"{len(accepted) / draws:.0%} of generator draws kept ({len(accepted)} of {draws}" in out
    assert "0% referee re-asks (0 over 6 verdicts)" in out  # the loopback referee's replies all read
    assumed = Assumptions(acceptance=len(accepted) / draws, reask_rate=0, referee_reply_tokens=round(replies["referee"]),
                          teacher_reply_tokens=round(replies["teacher"]))
    plan = make_plan(load_config(config), load_seeds(str(tmp_path / "seeds.jsonl")).rows, assumed)
    assert f"projected for the full run: {config}, 8 seeds, 2 iterations" in out
    assert plan.cost_usd > 0 and re.search(rf"^\s+total\s+{plan.requests}\s+{plan.cost_usd:.2f}\s", out, re.M)


def test_a_preview_refuses_resume_and_iterations(config):
    for extra in (["--resume", "some-run"], ["--iterations", "2"]):
        r = lion("run", "--config", config, "--preview", "3", *extra)
        assert r.returncode == 1 and "--preview starts a run of its own" in r.stderr, r.stderr
    r = lion("run", "--config", config, "--preview", "0")
    assert r.returncode == 2 and "--preview" in r.stderr
