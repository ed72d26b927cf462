"""Batched student inference with per-batch persistence, on a tiny model and on the embedded student."""

import pytest

from lion_core.config import StudentGeneration
from lion_core.llm import ResponseStore
from lion_core.student import infer
from lion_core.student.infer import student_answers
from lion_core.student.models import resolve_model

pytestmark = pytest.mark.slow

ROWS = [{"id": f"r{i}", "instruction": f"Name {i + 1} fruits.", "input": "" if i % 2 else "briefly"} for i in range(6)]
# A random-weight model's greedy choice can be a special token that decodes to nothing; sampling from
# its near-uniform distribution (seeded) gives ordinary tokens.
SAMPLED = StudentGeneration(do_sample=True, temperature=1.0, max_new_tokens=6, batch_size=4)


def test_answers_are_persisted_and_never_generated_twice(tmp_path, tiny_model, monkeypatch):
    with ResponseStore(str(tmp_path / "r.sqlite")) as store:
        first = student_answers(tiny_model, ROWS, SAMPLED, store)
        assert [a["id"] for a in first] == [r["id"] for r in ROWS]
        assert all(a["status"] == "ok" and a["answer"] for a in first)
        assert store.counts() == {"ok": 6}

        def must_not_run(*a, **k):
            raise AssertionError("generation ran although every answer was stored")

        monkeypatch.setattr(infer, "generate_hf", must_not_run)
        again = student_answers(tiny_model, ROWS, SAMPLED, store)
    assert [a["answer"] for a in again] == [a["answer"] for a in first]


def test_a_crash_mid_pool_resumes_with_only_the_missing_answers(tmp_path, tiny_model, monkeypatch):
    real = infer.generate_hf
    seen = []

    def crash_after_first_batch(model_path, tokenizer, prompts, index, gen, seed, dtype):
        seen.append(list(index))
        for n, item in enumerate(real(model_path, tokenizer, prompts, index, gen, seed, dtype)):
            if n == gen.batch_size and len(seen) == 1:
                raise RuntimeError("killed")
            yield item

    monkeypatch.setattr(infer, "generate_hf", crash_after_first_batch)
    with ResponseStore(str(tmp_path / "r.sqlite")) as store:
        with pytest.raises(RuntimeError, match="killed"):
            student_answers(tiny_model, ROWS, SAMPLED, store)
        assert store.counts() == {"ok": 4}
        answers = student_answers(tiny_model, ROWS, SAMPLED, store)
    assert len(seen[1]) == 2  # only the two missing rows were generated again
    assert all(a["status"] == "ok" for a in answers)


def test_a_different_checkpoint_does_not_reuse_answers(tmp_path, tiny_model):
    import shutil

    import torch
    from transformers import AutoModelForCausalLM

    other = tmp_path / "other"
    shutil.copytree(tiny_model, other)
    m = AutoModelForCausalLM.from_pretrained(other)
    with torch.no_grad():
        next(m.parameters()).add_(0.01)
    m.save_pretrained(other)
    with ResponseStore(str(tmp_path / "r.sqlite")) as store:
        student_answers(tiny_model, ROWS[:2], SAMPLED, store)
        student_answers(other, ROWS[:2], SAMPLED, store)
        assert store.counts() == {"ok": 4}


def test_the_embedded_student_answers(tmp_path):
    path = resolve_model("embedded:smollm2-135m-instruct")
    with ResponseStore(str(tmp_path / "r.sqlite")) as store:
        out = student_answers(path, ROWS[:2], StudentGeneration(do_sample=False, max_new_tokens=12, batch_size=2), store)
    assert all(a["status"] == "ok" and len(a["answer"].split()) >= 1 for a in out)


def test_answers_from_a_child_process_in_a_set_dtype(tmp_path, tiny_model):
    """The flow's path: the child writes each answer to the store; a set dtype is part of the key."""
    from lion_core.config import StudentGeneration
    from lion_core.llm import ResponseStore
    from lion_core.student.infer import student_answers_in_child

    rows = [{"id": f"q{i}", "instruction": f"Name {i} colours.", "input": ""} for i in range(3)]
    gen = StudentGeneration(do_sample=False, max_new_tokens=4, batch_size=2)
    path = str(tmp_path / "r.sqlite")
    out = student_answers_in_child(tiny_model, rows, gen, {"location": path}, dtype="bfloat16")
    assert [r["id"] for r in out] == ["q0", "q1", "q2"]
    with ResponseStore(path) as store:
        again = student_answers(tiny_model, rows, gen, store, dtype="bfloat16")  # all from the store
        assert again == out
        fp32 = student_answers(tiny_model, rows, gen, store, dtype="float32")
    assert len(fp32) == 3
    import sqlite3
    n = sqlite3.connect(path).execute("select count(*) from responses").fetchone()[0]
    assert n == 6  # three per dtype: the bf16 answers were not reused for float32
