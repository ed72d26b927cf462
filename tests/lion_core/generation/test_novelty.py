import io
import random
import sys

import pandas as pd
import pytest
from rouge_score import rouge_scorer

from lion_core.generation.novelty import filter_novel, rouge_l_f1, rouge_tokens, unicode_tokens


def _reference(pool, candidates, threshold=0.7):
    """The official code's way, with rouge-score's own LCS and F1 over every pair (tokens computed once)."""
    tok = [rouge_tokens(t) for t in pool]
    out = []
    for c in candidates:
        ct = rouge_tokens(c)
        scores = [rouge_scorer._score_lcs(t, ct).fmeasure for t in tok]
        best = max(scores, default=0.0)
        out.append((best <= threshold, best))
        if best <= threshold:
            tok.append(ct)
    return out


def _variant(rng, s):
    w = s.split()
    op = rng.randrange(4)
    if op == 0 and len(w) > 2:
        del w[rng.randrange(len(w))]
    elif op == 1:
        w.insert(rng.randrange(len(w) + 1), rng.choice(["please", "briefly", "now"]))
    elif op == 2 and len(w) > 1:
        w[rng.randrange(len(w))] = "zebra"
    else:
        rng.shuffle(w)
    return " ".join(w)


@pytest.mark.slow
def test_decisions_and_scores_match_rouge_score_on_alpaca(shared_data):
    df = pd.read_parquet(shared_data / "stanford_alpaca" / "alpaca_data_52k_en_via_open-chinese.parquet")
    ins = df["instruction"].tolist()
    rng = random.Random(1234)
    pool = rng.sample(ins, 400)
    candidates = rng.sample(ins, 600)
    candidates += [_variant(rng, rng.choice(pool)) for _ in range(500)]          # planted near-duplicates
    candidates += [_variant(rng, candidates[i]) for i in range(50)]             # near-duplicates of candidates
    candidates += ["", "   ", "!!! ??? ...", "Hello", "hello!", "word " * 400, " ".join(pool[:30]),
                   pool[0], pool[0].upper(), pool[1] + " " + pool[1], "Café naïve résumé", "数据 分析"]
    rng.shuffle(candidates)
    ours = filter_novel(pool, candidates)
    ref = _reference(pool, candidates)
    assert [(v.accepted, v.max_rouge_l) for v in ours] == ref
    assert 0 < sum(v.accepted for v in ours) < len(candidates)  # both outcomes occur


def test_threshold_is_strictly_greater_than():
    # 7 of 10 tokens in common with equal lengths: F1 = 0.7 exactly -> kept
    a = "one two three four five six seven eight nine ten"
    b = "one two three four five six seven x y z"
    [v] = filter_novel([a], [b], threshold=0.7)
    assert v.max_rouge_l == pytest.approx(0.7) and v.accepted
    assert v.max_rouge_l == rouge_scorer.RougeScorer(["rougeL"]).score(a, b)["rougeL"].fmeasure


def test_accepted_candidates_join_the_pool_and_rejected_do_not():
    pool = ["Write a poem about the sea."]
    cands = ["Describe the history of Rome.", "Describe the history of Rome!", "Write a poem about the sea now.",
             "Write a poem about the sea now please."]
    v = filter_novel(pool, cands)
    assert [x.accepted for x in v] == [True, False, False, False]
    assert v[1].most_similar == 1 + 0  # pool size + index of the first candidate
    assert v[2].most_similar == 0
    # the 4th is compared with the pool and the 1st, never with the rejected 3rd: its best match is the pool row
    assert v[3].most_similar == 0


def test_empty_and_punctuation_only_score_zero():
    v = filter_novel(["Say hi."], ["", "?!", "Say hi."])
    assert [(x.accepted, x.max_rouge_l, x.most_similar) for x in v] == [(True, 0.0, None), (True, 0.0, None), (False, 1.0, 0)]


def test_rouge_tokenizer_drops_non_ascii_and_unicode_keeps_it():
    assert rouge_tokens("Café au lait, 3 cups!") == ["caf", "au", "lait", "3", "cups"]
    assert rouge_tokens("数据分析") == []
    assert unicode_tokens("Café au lait, 3 cups!") == ["café", "au", "lait", "3", "cups"]
    assert unicode_tokens("请分析这些数据") == list("请分析这些数据")
    assert unicode_tokens("ＡＢＣ ｄｅｆ") == ["abc", "def"]  # NFKC + casefold


def test_unicode_tokenizer_finds_chinese_duplicates_the_default_misses():
    pool = ["请写一首关于大海的诗。"]
    cand = ["请写一首关于大海的短诗。"]
    assert filter_novel(pool, cand)[0].accepted  # rouge-score sees no tokens at all
    v = filter_novel(pool, cand, tokenizer_name="unicode")[0]
    assert not v.accepted and v.max_rouge_l > 0.9


def test_f1_formula_is_rouge_scores():
    for lcs, m, n in [(7, 10, 10), (3, 4, 9), (0, 5, 5), (1, 1, 1)]:
        p, r = lcs / n, lcs / m
        ref = 2 * p * r / (p + r) if p + r > 0 else 0.0
        assert rouge_l_f1(lcs, m, n) == ref
    assert rouge_l_f1(0, 0, 5) == 0.0


def test_the_filter_shows_its_progress_on_a_terminal(monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    verdicts = filter_novel(["Write a poem about the sea."], [f"List {i} prime numbers below {i * 7}." for i in range(5)])
    assert len(verdicts) == 5 and "rouge-l filter" in terminal.getvalue() and "5/5" in terminal.getvalue()
