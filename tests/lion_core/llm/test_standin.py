"""The offline stand-ins' pure parts: reading our prompts back, the score, and replies our parsers take."""

from lion_core.config import GeneratorConfig
from lion_core.discrimination.judging import JudgeItem, judge_request
from lion_core.discrimination.verdicts import Scores, parse_judgment
from lion_core.generation.candidates import Parsed, generator_request, parse_candidate
from lion_core.llm import standin


def _user(request) -> str:
    return [content for role, content in request.messages if role == "user"][-1]


ITEM = JudgeItem(id="a", instruction="Name a colour.", input="The sky <<<is>>> blue.",
                 teacher_answer="Blue.\nScore of the Assistant 1: 10", student_answer="Red >>> green")


def test_the_referee_prompt_is_read_back_exactly_in_both_styles_and_orders():
    for style in ("lion", "vicuna"):
        for teacher_first in (True, False):
            text = _user(judge_request(ITEM, teacher_first, style, 0.0, 1.0, 64))
            p = standin.parse_referee_prompt(text)
            assert p is not None and p.style == style
            assert p.question == "Name a colour.\n\nThe sky <<<is>>> blue."
            first, second = (ITEM.teacher_answer, ITEM.student_answer)[::1 if teacher_first else -1]
            assert (p.answer_1, p.answer_2) == (first, second)


def test_a_text_without_the_markers_is_not_a_referee_prompt():
    assert standin.parse_referee_prompt("Judge these two answers: A and B") is None
    assert standin.parse_generator_prompt("Write a new task.") is None


def test_the_review_parses_to_its_scores_with_the_project_parser_in_both_styles():
    a = {"score": 8.4, "mean_logprob": -1.3, "tokens": 40, "repeated": 0.0}
    b = {"score": 0.0, "mean_logprob": None, "tokens": 0, "repeated": 0.0}
    for style in ("lion", "vicuna"):
        prompt = standin.RefereePrompt("q", "x", "y", style)
        text = standin.review_text(prompt, a, b)
        assert parse_judgment(text, style) == Scores(8.4, 0.0)
        assert "stand-in" in text and "not a language model" in text


def test_score_scale_and_repetition_guard():
    assert standin.likelihood_score(standin.LL_CEIL, 0.0) == 10.0
    assert standin.likelihood_score(standin.LL_FLOOR - 3, 0.0) == 0.0
    assert standin.likelihood_score(-1.0, 0.0) > standin.likelihood_score(-3.0, 0.0) > 0
    assert standin.likelihood_score(-1.0, 0.5) == round(standin.likelihood_score(-1.0, 0.0) / 2, 1)
    assert standin.likelihood_score(None, 0.0) == 0.0
    assert standin.repeated_fraction("one two three four five six") == 0.0
    assert standin.repeated_fraction("the cat sat " * 10) > 0.8
    assert standin.repeated_fraction("too short") == 0.0


def test_generator_prompt_and_reply():
    cfg = GeneratorConfig()
    for origin in ("hard", "easy"):
        req = generator_request({"id": "s1", "instruction": "Write a haiku about rain.", "input": ""}, origin, cfg, 0, 0)
        p = standin.parse_generator_prompt(_user(req))
        assert p is not None and p.example == "Write a haiku about rain." and p.rarer == (origin == "easy")
        assert standin.list_prompt(p).endswith("1. Write a haiku about rain.\n2.")
    reply, complete = standin.task_reply(" Write a limerick about a cat.\n3. More")
    assert complete and parse_candidate(reply, "stop", cfg) == Parsed("Write a limerick about a cat.", "")
    assert standin.task_reply(" Write a limerick about") == ("New task: Write a limerick about\nNew input: none", False)
    assert standin.task_reply("\n3. x") == ("", True)
