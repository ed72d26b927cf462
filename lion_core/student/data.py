"""Supervised examples for the student: loss on the answer tokens only."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from lion_core.prompts import checkpoint_prompt

IGNORE = -100


@dataclass(frozen=True)
class Examples:
    items: list[dict[str, list[int]]]
    skipped_prompt_too_long: int
    truncated: int


def build_examples(rows: Sequence[dict[str, Any]], tokenizer: Any, fmt: str, max_length: int) -> Examples:
    """Prompt tokens are masked out of the labels; answers end with EOS; sequences are cut at max_length.
    A prompt that leaves no room for any answer token is skipped and counted."""
    items, skipped, truncated = [], 0, 0
    eos = tokenizer.eos_token_id
    for r in rows:
        prompt_ids = tokenizer(checkpoint_prompt(tokenizer, r["instruction"], r["input"], fmt),
                               add_special_tokens=fmt == "alpaca")["input_ids"]
        answer_ids = tokenizer(r["answer"], add_special_tokens=False)["input_ids"] + [eos]
        if len(prompt_ids) >= max_length:
            skipped += 1
            continue
        ids = (prompt_ids + answer_ids)[:max_length]
        truncated += len(prompt_ids) + len(answer_ids) > max_length
        labels = ([IGNORE] * len(prompt_ids) + answer_ids)[:max_length]
        items.append({"input_ids": ids, "labels": labels})
    return Examples(items, skipped, truncated)


class ListDataset(torch.utils.data.Dataset):
    def __init__(self, items: list[dict[str, list[int]]]):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, list[int]]:
        return self.items[i]


class PadCollator:
    """Right-pads a batch to its longest sequence; padding is masked from attention and loss."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id
        self.real_tokens = 0
        self.padded_tokens = 0

    def __call__(self, batch: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        n = max(len(b["input_ids"]) for b in batch)
        ids = torch.full((len(batch), n), self.pad_id, dtype=torch.long)
        labels = torch.full((len(batch), n), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(batch), n), dtype=torch.long)
        for i, b in enumerate(batch):
            k = len(b["input_ids"])
            ids[i, :k] = torch.tensor(b["input_ids"])
            labels[i, :k] = torch.tensor(b["labels"])
            mask[i, :k] = 1
        self.real_tokens += int(mask.sum())
        self.padded_tokens += mask.numel()
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}

    @property
    def padding_fraction(self) -> float:
        return 1 - self.real_tokens / self.padded_tokens if self.padded_tokens else 0.0
