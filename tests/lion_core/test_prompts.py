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


def test_a_tokenizer_that_adds_bos_gets_it_from_the_template_token_for_token(lion_tokenizer):
    """What a server encodes (the chat rendered, no special tokens added) equals what training encodes
    (the prompt with the tokenizer's own special tokens), for a tokenizer that puts BOS in front."""
    from lion_core.prompts import adds_bos

    tok, _ = lion_tokenizer
    assert not adds_bos(tok)  # SmolLM2 adds no BOS ...
    tok.chat_template = alpaca_chat_template(bos=True)  # ... so pretend, as a LLaMA tokenizer would
    try:
        msgs = [{"role": "user", "content": "Sort the words.", "input": "pear apple"}]
        served = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        assert served == tok.bos_token + student_prompt("Sort the words.", "pear apple")
        assert checkpoint_prompt(tok, "Sort the words.", "pear apple") == student_prompt("Sort the words.", "pear apple")
    finally:
        tok.chat_template = alpaca_chat_template()
    served_ids = tok(tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True),
                     add_special_tokens=False)["input_ids"]
    assert served_ids == tok(student_prompt("Sort the words.", "pear apple"))["input_ids"]
