"""Instruction types (root verb, direct object) from spaCy's real parse, and the Figure 3 chart."""

from __future__ import annotations

import importlib.util
import json
import os
import sys

import pytest

from lion_core import instruction_types as it
from lion_core.errors import LionError
from lion_core.plots import instruction_types as instruction_types_chart

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def parser() -> None:
    """Skip a parsing test where the optional [types] extra is absent (CI must have it)."""
    if importlib.util.find_spec("spacy") is None or importlib.util.find_spec(it.MODEL_PACKAGE) is None:
        if os.environ.get("CI"):
            pytest.fail(f"spaCy or {it.MODEL_PACKAGE} is not installed; CI must install the [types] extra")
        pytest.skip(f"spaCy or {it.MODEL_PACKAGE} is not installed ({it.INSTALL_HINT})")


def test_imperatives_give_their_verb_and_object_lemmas(parser):
    texts = ["Write a poem about the ocean.", "Give three tips for staying healthy.",
             "Classify the following sentences as positive or negative.", "Please write a short story.",
             "Tell me a joke."]
    assert it.verb_object_pairs(texts) == [("write", "poem"), ("give", "tip"), ("classify", "sentence"),
                                           ("write", "story"), ("tell", "joke")]


def test_questions_verbs_without_object_and_blanks_have_no_pair(parser):
    texts = ["What is the capital of France?",  # AUX root
             "Describe how photosynthesis works.",  # a clause, not a direct object
             "", "   "]
    assert it.verb_object_pairs(texts) == [None, None, None, None]


def test_only_the_first_sentence_counts_and_long_texts_are_clipped(parser):
    pairs = it.verb_object_pairs(["Rewrite the sentence in passive voice. Then explain the change.",
                                  "Summarize the text." + " word" * 2000])
    assert pairs == [("rewrite", "sentence"), ("summarize", "text")]
    assert it.verb_object_pairs([]) == []


def test_a_pronoun_object_keeps_its_form(parser):
    assert it.verb_object_pairs(["Tell me why this joke is not funny."]) == [("tell", "me")]


def test_counts_keep_the_texts_without_a_pair():
    c = it.count_pairs([("write", "poem"), ("write", "poem"), ("write", "story"), ("give", "tip"), None])
    assert (c.total, c.no_pair) == (5, 1)
    assert c.pairs == {"write poem": 2, "write story": 1, "give tip": 1}
    assert c.verbs.most_common() == [("write", 3), ("give", 1)]
    assert c.top_verbs(1, objects=1) == [("write", 3, [("poem", 2)])]


def test_self_instruct_seed_tasks(shared_data, parser):
    rows = (shared_data / "stanford_alpaca" / "seed_tasks.jsonl").read_text().splitlines()
    texts = [json.loads(r)["instruction"] for r in rows]
    assert len(texts) == 175
    c = it.type_counts(texts)
    # On spaCy 3.8 / en_core_web_sm 3.8.0: 134 of 175 get a pair; "write" leads with 21, "give" next with 9.
    assert c.total - c.no_pair > 0.6 * c.total
    assert c.verbs.most_common(1)[0][0] == "write"
    assert {"give", "generate", "explain"} <= {v for v, _ in c.verbs.most_common(8)}


def test_sample_is_bounded_deterministic_and_in_order():
    texts = [f"t{i}" for i in range(1000)]
    a = it.sample(texts, 50, seed=3)
    assert len(a) == 50 and len(set(a)) == 50
    assert a == it.sample(texts, 50, seed=3)
    assert a != it.sample(texts, 50, seed=4)
    assert a == sorted(a, key=texts.index)
    assert it.sample(texts[:10], 50) == texts[:10]
    assert it.sample(texts, 0) == []
    with pytest.raises(ValueError):
        it.sample(texts, -1)


def test_missing_model_package_is_a_lion_error_naming_the_extra(monkeypatch):
    monkeypatch.setattr(it, "_nlp", None)
    monkeypatch.setitem(sys.modules, it.MODEL_PACKAGE, None)  # makes the import fail
    with pytest.raises(LionError, match=r"lion-distill\[types\]"):
        it.verb_object_pairs(["Write a poem."])


def test_chart_draws_a_panel_per_set_including_an_empty_one(parser):
    sets = [("Cache Pool", ["Write a poem about rain.", "Give three tips for sleeping well.",
                            "What is the capital of Peru?", "Write a story about a dog."]),
            ("hard items", ["Write a haiku about autumn."]),
            ("new hard instructions", [])]
    png = instruction_types_chart(sets, iteration=2, top=5, note="Cache Pool: a sample")
    assert png.startswith(PNG)


def test_counts_from_a_child_process_equal_those_parsed_here():
    sets = [["Write a poem about the sea.", "Give three tips for sleeping."], ["What is rain?", "Name a colour."]]
    assert it.type_counts_in_child(sets) == [it.type_counts(texts) for texts in sets]
