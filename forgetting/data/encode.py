"""Turning rows into training examples: answer-only loss for (prompt, response) pairs, all-token loss for text.

    pytest tests/data/test_encode.py

An example is ``{"input_ids": [...], "labels": [...], "weight": w}``; ``labels`` is -100 where no loss is taken.
Prompt and response are tokenized separately and concatenated, so the loss boundary is exact even when BPE
would merge across it; the evaluator sends the same prompt text, so its tokens are the same prefix.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

IGNORE = -100


def encode_prompt(tokenizer, prompt: str) -> list[int]:
    """``BOS prompt``: what a model is given to answer, in training and in contextual generation alike."""
    return [tokenizer.bos_token_id] + tokenizer(prompt, add_special_tokens=False).input_ids


def encode_pair(tokenizer, prompt: str, response: str, max_len: int, weight: float = 1.0) -> dict:
    """``BOS prompt response EOS``; loss on the response tokens and EOS only."""
    p = encode_prompt(tokenizer, prompt)
    r = tokenizer(" " + response.lstrip(" "), add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
    ids = (p + r)[:max_len]
    labels = ([IGNORE] * len(p) + r)[:max_len]
    return {"input_ids": ids, "labels": labels, "weight": weight}


def encode_text(tokenizer, text: str, max_len: int, weight: float = 1.0) -> dict:
    """``BOS text EOS`` with loss on every token (pretraining style)."""
    ids = ([tokenizer.bos_token_id] + tokenizer(text, add_special_tokens=False).input_ids
           + [tokenizer.eos_token_id])[:max_len]
    return {"input_ids": ids, "labels": list(ids), "weight": weight}


def encode_ids(ids: list[int], max_len: int, weight: float = 1.0, n_prompt: int = 0) -> dict:
    """Already tokenized text (a model's own samples, BOS included): loss on every token after the first
    ``n_prompt`` (0 for context-free samples: all tokens)."""
    ids = list(ids)[:max_len]
    labels = [IGNORE] * min(n_prompt, len(ids)) + ids[n_prompt:]
    return {"input_ids": ids, "labels": labels, "weight": weight}


@dataclass
class Collator:
    """Right-pads a batch and spreads each row's weight over its loss tokens (``loss_weight``)."""

    pad_token_id: int

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        width = max(len(r["input_ids"]) for r in rows)
        n = len(rows)
        input_ids = torch.full((n, width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((n, width), IGNORE, dtype=torch.long)
        attention = torch.zeros((n, width), dtype=torch.long)
        weight = torch.zeros((n, width), dtype=torch.float)
        for i, r in enumerate(rows):
            k = len(r["input_ids"])
            input_ids[i, :k] = torch.tensor(r["input_ids"])
            labels[i, :k] = torch.tensor(r["labels"])
            attention[i, :k] = 1
            weight[i, :k] = r["weight"]
        weight[labels == IGNORE] = 0.0
        return {"input_ids": input_ids, "attention_mask": attention, "labels": labels, "loss_weight": weight}
