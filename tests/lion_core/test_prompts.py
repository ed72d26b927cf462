"""The student's prompt: the Alpaca template file and the chat template that checkpoints carry."""

import pytest

from lion_core.errors import LionError
from lion_core.prompts import alpaca_chat_template, checkpoint_prompt, render, student_prompt


@pytest.fixture(scope="module")
def lion_tokenizer(model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    base_template = tok.chat_template
    tok.chat_template = alpaca_chat_template()
    return tok, base_template


def test_the_chat_template_renders_exactly_the_trained_prompt_on_alpaca_rows(lion_tokenizer, shared_data):
    import pandas as pd

    tok, _ = lion_tokenizer
    rows = pd.read_parquet(shared_data / "stanford_alpaca" / "alpaca_data_52k_en_via_open-chinese.parquet").head(200)
    assert rows["input"].str.strip().ne("").sum() > 50  # rows with and without an input
    for r in rows.itertuples():
        via_template = tok.apply_chat_template([{"role": "user", "content": r.instruction, "input": r.input}],
                                               tokenize=False, add_generation_prompt=True)
        assert via_template == student_prompt(r.instruction, r.input, "alpaca")
        assert checkpoint_prompt(tok, r.instruction, r.input) == via_template
    with_input = student_prompt("Summarize the text.", "Cats {sleep} a lot.")
    assert with_input == "### Instruction:\nSummarize the text.\n\n### Input:\nCats {sleep} a lot.\n\n### Response:\n"


def test_a_conversation_renders_the_answer_with_eos(lion_tokenizer):
    tok, _ = lion_tokenizer
    text = tok.apply_chat_template([{"role": "user", "content": "Name a prime."}, {"role": "assistant", "content": "7"}],
                                   tokenize=False)
    assert text == student_prompt("Name a prime.") + "7" + tok.eos_token


def test_the_base_model_is_prompted_from_the_template_file(model_dir):
    from transformers import AutoTokenizer

    base = AutoTokenizer.from_pretrained(model_dir)  # ChatML template: not a Lion checkpoint
    assert checkpoint_prompt(base, "Name a prime.") == student_prompt("Name a prime.")
    assert "<|im_start|>" in checkpoint_prompt(base, "Name a prime.", fmt="chat_template")


def test_render_refuses_missing_and_unknown_values():
    with pytest.raises(LionError, match="no value"):
        render("student_alpaca", instruction="x")
    with pytest.raises(LionError, match="has no"):
        render("student_alpaca", instruction="x", input_section="", extra="y")
