"""The offline referee stand-in behind its loopback endpoint: verdicts through the real referee path,
and a labelled check that it prefers the teacher's answer to clearly worse answers."""

import json

import httpx
import pytest

from lion_core.config import load_config
from lion_core.discrimination.judging import discriminate
from lion_core.discrimination.referee_check import check_figures, labelled_items
from lion_core.llm import ChatRequest, Endpoint, Gateway, ResponseStore
from lion_core.prompts import teacher_messages

pytestmark = pytest.mark.slow


def test_labelled_check_prefers_the_teachers_answer_in_both_orders(endpoints, tmp_path, repo):
    cfg = load_config(repo / "configs" / "embedded.yaml")
    seeds = [json.loads(x) for x in (repo / "data" / "demo_seeds.jsonl").read_text().splitlines()[:12]]
    with ResponseStore(str(tmp_path / "responses.sqlite")) as rs:
        teacher = Gateway(Endpoint.from_config("teacher", cfg.teacher, embedded=endpoints), rs)
        referee = Gateway(Endpoint.from_config("referee", cfg.referee, embedded=endpoints), rs)
        answers = teacher.run_sync([ChatRequest.of(teacher_messages(s["instruction"], s["input"]), temperature=0.7,
                                                   max_tokens=48, tag=str(i)) for i, s in enumerate(seeds)], "check")
        rows = [{"id": str(i), "instruction": s["instruction"], "input": s["input"], "answer": a.text}
                for i, (s, a) in enumerate(zip(seeds, answers)) if a.ok and a.text.strip()]
        assert len(rows) >= 10
        labelled = labelled_items(rows)
        judged = discriminate(referee, [item for _, item in labelled], style=cfg.referee.prompt_style, tau=1.0,
                              max_reasks=0)
    figures = check_figures([kind for kind, _ in labelled], judged)
    assert figures["resolved_fraction"] >= 0.95
    assert figures["prefers_teacher_fraction"] >= 0.9, figures
    for kind, f in figures["by_kind"].items():
        assert f["prefers_teacher_fraction"] >= 0.8, (kind, f)
    # it cannot see position: both orders give the same two scores
    assert all(r.t_score_t_first == r.t_score_s_first and r.s_score_t_first == r.s_score_s_first for r in judged)
    assert all("stand-in" in (r.raw_t_first or "") for r in judged)


def test_anything_but_a_referee_or_generator_prompt_is_refused_with_400(standin):
    url = f"{standin.base_url}/chat/completions"
    r = httpx.post(url, json={"model": "smollm2-likelihood-referee", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 400 and "not a referee prompt" in r.json()["error"]["message"]
    r = httpx.post(url, json={"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 400 and "not served here" in r.json()["error"]["message"]
    assert httpx.get(f"{standin.base_url}/models").json()["data"][0]["id"] == "smollm2-likelihood-referee"
