"""The preview's pure parts (lion_core.preview, lion_core.preview_text): the derived config, the
assumptions taken from what a preview observed, and the text layout. The whole command against a
loopback API: tests/lion_cli/test_preview.py."""

from lion_core.config import parse_config
from lion_core.discrimination.judging import JudgmentRow
from lion_core.generation.candidates import CandidateRow
from lion_core.preview import (
    Draw,
    Exchange,
    PreviewReport,
    RoleTokens,
    Verdict,
    observed_assumptions,
    preview_config,
    seeds_jsonl,
)
from lion_core.preview_text import WIDTH, clip, clip_material, side_by_side, verdict_lines


def _exchange(reply="Score of the Assistant 1: 8\nScore of the Assistant 2: 3", role="referee"):
    return Exchange(role=role, messages=(("user", "Judge these."),), reply=reply, finish_reason="stop", prompt_tokens=10,
                    completion_tokens=5, error=None, key="k")


def _draw(status):
    c = CandidateRow(round=1, origin="hard", seed_id="s", seed_instruction="x", seed_has_input=False, max_tokens=64,
                     cached=False, raw="New task: y", finish_reason="stop", instruction="y", input="", status=status,
                     reason=None if status == "accepted" else "rouge_l", max_rouge_l=0.9, most_similar="x")
    return Draw(exchange=_exchange("New task: y", "generator"), candidate=c, seed_number=1)


def _report(draws, reasks=0, pairs=6, teacher=(6, 120), referee=(6, 150)):
    tokens = {"teacher": RoleTokens(teacher[0], 60, teacher[1], 0.0), "referee": RoleTokens(referee[0], 300, referee[1], 0.0),
              "generator": RoleTokens(len(draws), 100, 40, 0.0)}
    return PreviewReport(run_id="p", tau=1.0, seeds=[], draws=draws, new=[], tokens=tokens, referee_pairs=pairs,
                         reasks=reasks)


def test_the_preview_config_changes_only_the_loop_the_seeds_and_the_evaluation():
    cfg = parse_config({"loop": {"iterations": 3, "new_instructions_per_iteration": 6000},
                        "evaluation": {"eval_set": "q.jsonl", "after_run": True},
                        "teacher": {"base_url": "https://api.example/v1", "model": "gpt-x",
                                    "sampling": {"max_tokens": 99}}})
    derived = preview_config(cfg, 4, "/tmp/seeds.jsonl")
    assert (derived.loop.iterations, derived.loop.new_instructions_per_iteration) == (1, 4)
    assert derived.data.seed == "/tmp/seeds.jsonl" and not derived.evaluation.after_run
    assert derived.teacher == cfg.teacher and derived.training == cfg.training and derived.storage == cfg.storage
    assert derived.config_hash() != cfg.config_hash()  # a run of its own


def test_seeds_keep_their_own_answers_when_written_back():
    rows = [{"instruction": "a", "input": "", "metadata": '{"output": "A."}'},
            {"instruction": "b", "input": "i", "metadata": None}]
    assert seeds_jsonl(rows) == ('{"instruction": "a", "input": "", "output": "A."}\n'
                                 '{"instruction": "b", "input": "i"}\n')


def test_the_assumptions_are_what_the_preview_observed():
    observed = observed_assumptions(_report([_draw("accepted"), _draw("rejected")], reasks=3), parse_config({}))
    a = observed.assumptions
    assert (a.teacher_reply_tokens, a.referee_reply_tokens, a.reask_rate, a.acceptance) == (20, 25, 0.5, 0.5)
    assert "teacher replies 20 tokens (mean of 6)" in observed.notes[0]
    assert "50% referee re-asks (3 over 6 verdicts)" in observed.notes[2]


def test_no_draw_kept_is_planned_at_the_request_budget_and_nothing_observed_falls_back_to_the_defaults():
    cfg = parse_config({"generator": {"request_budget_factor": 4}})
    a = observed_assumptions(_report([_draw("rejected")] * 3), cfg)
    assert a.assumptions.acceptance == 0.25 and "the request budget's bound" in a.notes[3]
    empty = observed_assumptions(_report([], pairs=0, teacher=(0, 0), referee=(0, 0)), cfg)
    assert empty.assumptions.teacher_reply_tokens is None and empty.assumptions.acceptance == 0.5
    assert all("none observed" in n for n in empty.notes)


def test_long_texts_are_cut_with_their_length_and_blocks_fit_the_terminal():
    assert clip("x" * 700, 600) == "x" * 600 + "… (700 chars)"
    middle = clip("a" * 500 + "b" * 500, 200, middle=True)
    assert middle.startswith("a" * 100) and middle.endswith("b" * 100) and "(1,000 chars; 800 cut)" in middle
    prompt = clip_material("Judge:\n<<<ANSWER OF ASSISTANT 1>>>\n" + "w " * 400 + "\n<<<END ANSWER OF ASSISTANT 1>>>\nEnd.")
    assert "… (800 chars)\n<<<END ANSWER OF ASSISTANT 1>>>\nEnd." in prompt
    lines = side_by_side("sent", "word " * 200, "reply", "z" * 300)
    assert all(len(line) <= WIDTH for line in lines) and lines[0].startswith("sent ") and " │ reply" in lines[0]


def test_a_verdict_shows_each_order_its_parsed_scores_and_the_label():
    j = JudgmentRow(id="i", instruction="q", input="", t_score_t_first=8, s_score_t_first=3, t_score_s_first=7,
                    s_score_s_first=4, mean_t=7.5, mean_s=3.5, d=4.0, label="hard", reason=None, raw_t_first="",
                    raw_s_first="", asks=3)
    unreadable = _exchange("I like both.")
    text = "\n".join(verdict_lines(Verdict((_exchange(),), (unreadable, _exchange()), j), tau=1.0))
    assert "→ teacher 8, student 3" in text and "→ teacher 7, student 4" in text
    assert "student's answer first (ask 1)" in text and "→ unreadable, asked again" in text
    assert "d = 4 ≥ tau 1 → hard" in text
