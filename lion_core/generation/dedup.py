"""`lion dedup`: the novelty filter over files, as the generation stage applies it."""

from __future__ import annotations

import pyarrow as pa

from lion_core.generation.novelty import filter_novel
from lion_core.rows import table_of_dicts
from lion_core.seeds import load_seeds

DEDUP_SCHEMA = pa.schema([
    ("instruction", pa.string()), ("input", pa.string()), ("accepted", pa.bool_()),
    ("max_rouge_l", pa.float64()), ("most_similar", pa.string()), ("most_similar_source", pa.string()),
])


def dedup(against: str, candidates: str, threshold: float = 0.7, tokenizer_name: str = "rouge") -> pa.Table:
    """Candidates in their order, each with its verdict against `against` plus the candidates accepted before it.
    Instructions are compared (inputs are carried along), as in the paper."""
    pool = [r["instruction"] for r in load_seeds(against).rows]
    rows = load_seeds(candidates, drop_duplicates=False).rows
    texts = [r["instruction"] for r in rows]
    verdicts = filter_novel(pool, texts, threshold, tokenizer_name)

    def similar(k: int | None) -> tuple[str | None, str | None]:
        if k is None:
            return None, None
        return (pool[k], "pool") if k < len(pool) else (texts[k - len(pool)], "candidate")

    out = []
    for r, v in zip(rows, verdicts):
        text, source = similar(v.most_similar)
        out.append({"instruction": r["instruction"], "input": r["input"], "accepted": v.accepted,
                    "max_rouge_l": v.max_rouge_l, "most_similar": text, "most_similar_source": source})
    return table_of_dicts(out, DEDUP_SCHEMA, "dedup")
