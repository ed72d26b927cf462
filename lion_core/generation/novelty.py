"""The ROUGE-L novelty filter: exact `rouge_score` 0.1.2 decisions, without scoring every pair.

A candidate is rejected when its ROUGE-L F1 against any pool instruction, or any candidate accepted
before it, is above the threshold. F1 = 2*LCS/(m+n) and LCS <= min(overlap, m, n), where overlap is the
multiset token overlap. Overlaps with every document come from an inverted index over token
*occurrences* ((token, k-th occurrence) features, so a sum of posting hits is the multiset overlap),
counted with numpy. Only documents whose bound can beat the best score found so far get an exact LCS,
from rapidfuzz's compiled LCSseq, and the F1 of those is computed with rouge-score's own formula, so
decisions and reported maxima match `RougeScorer(["rougeL"], use_stemmer=False)` to the last bit.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from rapidfuzz import process
from rapidfuzz.distance import LCSseq
from rouge_score import tokenize as rouge_tokenize

from lion_core.llm.progress import Progress

TOKENIZERS = ("rouge", "unicode")
_EPS = 1e-9  # bounds are loosened by this so that float rounding never prunes a real match

_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\uff66-\uff9f"
_UNICODE_TOKEN = re.compile(rf"[{_CJK}]|[^\W_{_CJK}]+")


def rouge_tokens(text: str) -> list[str]:
    """rouge-score's default tokenizer (lower-case, `[a-z0-9]+` runs only), called as rouge-score does."""
    return rouge_tokenize.tokenize(text, None)


def unicode_tokens(text: str) -> list[str]:
    """Opt-in tokenizer for non-English pools: NFKC, case-folded, letters and digits of any script kept,
    each CJK character a token of its own. rouge-score's default would drop all of them."""
    return _UNICODE_TOKEN.findall(unicodedata.normalize("NFKC", text).casefold())


def tokenizer(name: str) -> Callable[[str], list[str]]:
    if name == "rouge":
        return rouge_tokens
    if name == "unicode":
        return unicode_tokens
    raise ValueError(f"unknown tokenizer {name!r}; use one of {TOKENIZERS}")


def rouge_l_f1(lcs: int, m: int, n: int) -> float:
    """rouge-score's F1 from an LCS length, computed with its own float formula."""
    if m == 0 or n == 0:
        return 0.0
    precision, recall = lcs / m, lcs / n
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


@dataclass(frozen=True)
class Verdict:
    accepted: bool
    max_rouge_l: float
    most_similar: int | None
    """Index of the most similar document: < len(pool) is a pool row, otherwise pool size + candidate index."""


class _Index:
    """Token-occurrence postings over a fixed list of documents."""

    def __init__(self, docs: Sequence[list[int]]):
        self.lengths = np.array([len(d) for d in docs], dtype=np.int64)
        feats: dict[tuple[int, int], int] = {}
        self.doc_feats: list[np.ndarray] = []
        f_ids: list[int] = []
        d_ids: list[int] = []
        for i, doc in enumerate(docs):
            seen: Counter[int] = Counter()
            mine = []
            for tok in doc:
                seen[tok] += 1
                f = feats.setdefault((tok, seen[tok]), len(feats))
                mine.append(f)
            self.doc_feats.append(np.array(mine, dtype=np.int64))
            f_ids.extend(mine)
            d_ids.extend([i] * len(mine))
        f_arr, d_arr = np.array(f_ids, dtype=np.int64), np.array(d_ids, dtype=np.int64)
        order = np.argsort(f_arr, kind="stable")
        self.postings = d_arr[order]
        self.indptr = np.searchsorted(f_arr[order], np.arange(len(feats) + 1))
        self.n_docs = len(docs)

    def overlaps(self, i: int) -> np.ndarray:
        """Multiset token overlap of document i with every document."""
        feats = self.doc_feats[i]
        if not len(feats):
            return np.zeros(self.n_docs, dtype=np.int64)
        hits = np.concatenate([self.postings[self.indptr[f]:self.indptr[f + 1]] for f in feats])
        return np.bincount(hits, minlength=self.n_docs)


def _as_text(doc: list[int]) -> str:
    # rapidfuzz is fastest on str: one code point per token id, skipping the surrogate range
    return "".join(chr(t if t < 0xD800 else t + 0x800) for t in doc)


class NoveltyFilter:
    """Decide candidates in order against a pool; accepted candidates join the pool for later ones."""

    def __init__(self, pool: Sequence[str], candidates: Sequence[str], threshold: float = 0.7,
                 tokenizer_name: str = "rouge"):
        tok = tokenizer(tokenizer_name)
        vocab: dict[str, int] = {}
        docs = [[vocab.setdefault(t, len(vocab)) for t in tok(text)] for text in [*pool, *candidates]]
        self.threshold = threshold
        self.n_pool = len(pool)
        self._index = _Index(docs)
        self._texts = [_as_text(d) for d in docs]
        self._eligible = np.zeros(len(docs), dtype=bool)
        self._eligible[: self.n_pool] = True

    def run(self) -> list[Verdict]:
        progress = Progress(len(self._texts) - self.n_pool, "rouge-l filter", unit="candidate", quiet_below_s=15.0)
        verdicts = []
        for j in range(len(self._texts) - self.n_pool):
            verdicts.append(self._decide(self.n_pool + j))
            progress.update()
        progress.close()
        return verdicts

    def _decide(self, i: int) -> Verdict:
        lengths, m = self._index.lengths, int(self._index.lengths[i])
        best, best_doc = 0.0, None
        if m:
            overlap = self._index.overlaps(i)
            bound = 2.0 * np.minimum(overlap, np.minimum(lengths, m)) / (lengths + m)
            bound[~self._eligible] = -1.0  # empty documents already bound at 0 and are never examined
            # Exact LCS in rounds, most promising first, until no unexamined bound can beat the best.
            live = np.flatnonzero(bound > 0)
            block = 32
            while live.size:
                take = live if live.size <= block else live[np.argpartition(-bound[live], block)[:block]]
                lcs = process.cdist([self._texts[i]], [self._texts[k] for k in take], scorer=LCSseq.similarity,
                                    dtype=np.int32)[0]
                for k, c in zip(take.tolist(), lcs.tolist()):
                    f = rouge_l_f1(c, m, int(lengths[k]))
                    if f > best or (f == best and best_doc is not None and k < best_doc):
                        best, best_doc = f, k
                bound[take] = -1.0
                live = live[bound[live] + _EPS > best]
                block *= 4
        accepted = best <= self.threshold
        if accepted:
            self._eligible[i] = True
        return Verdict(accepted=accepted, max_rouge_l=best, most_similar=best_doc)


def filter_novel(pool: Sequence[str], candidates: Sequence[str], threshold: float = 0.7,
                 tokenizer_name: str = "rouge") -> list[Verdict]:
    """Verdicts for `candidates`, in order, against `pool` plus the candidates accepted before each."""
    return NoveltyFilter(pool, candidates, threshold, tokenizer_name).run()
