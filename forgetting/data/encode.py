"""Turning rows into training examples: answer-only loss for (prompt, response) pairs, all-token loss for text.

    pytest tests/data/test_encode.py tests/data/test_packing.py

An example is ``{"input_ids": [...], "labels": [...], "weight": w}``; ``labels`` is -100 where no loss is taken.
Prompt and response are tokenized separately and concatenated, so the loss boundary is exact even when BPE
would merge across it; the evaluator sends the same prompt text, so its tokens are the same prefix.

Every row and prompt starts the way the model's own tokenizer starts a text (:func:`start_ids`): ``[BOS]`` for
the toy and Llama-style tokenizers, nothing for OLMo-1B-hf's, which declares no BOS. lm-eval's HFLM encodes its
contexts the same way (``tokenizer(text)`` with the tokenizer's special tokens, ``add_bos_token`` unset or true),
and so does the held-out loss, so training, contextual generation and evaluation all see the same first tokens.
"""
from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

import torch

IGNORE = -100


def start_ids(tokenizer) -> list[int]:
    """The special tokens ``tokenizer(text)`` puts before a text (never those it may put after one): ``[BOS]``
    when the tokenizer adds one, ``[]`` for a tokenizer without BOS such as OLMo-1B-hf's."""
    plain = tokenizer("a", add_special_tokens=False).input_ids
    full = tokenizer("a", add_special_tokens=True).input_ids
    for i in range(len(full) - len(plain) + 1):
        if full[i:i + len(plain)] == plain:
            return list(full[:i])
    name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
    raise ValueError(f"tokenizer {name!r} changes a text's own tokens when it adds special tokens: expected "
                     "special tokens around the text only")


def encode_prompt(tokenizer, prompt: str) -> list[int]:
    """``[BOS] prompt``: what a model is given to answer, in training and in contextual generation alike."""
    return start_ids(tokenizer) + tokenizer(prompt, add_special_tokens=False).input_ids


def encode_pair(tokenizer, prompt: str, response: str, max_len: int, weight: float = 1.0) -> dict:
    """``[BOS] prompt response EOS``; loss on the response tokens and EOS only."""
    p = encode_prompt(tokenizer, prompt)
    r = tokenizer(" " + response.lstrip(" "), add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
    ids = (p + r)[:max_len]
    labels = ([IGNORE] * len(p) + r)[:max_len]
    return {"input_ids": ids, "labels": labels, "weight": weight}


def encode_text(tokenizer, text: str, max_len: int, weight: float = 1.0) -> dict:
    """``[BOS] text EOS`` with loss on every token (pretraining style: OLMo's documents end with EOS)."""
    ids = (start_ids(tokenizer) + tokenizer(text, add_special_tokens=False).input_ids
           + [tokenizer.eos_token_id])[:max_len]
    return {"input_ids": ids, "labels": list(ids), "weight": weight}


def encode_ids(ids: list[int], max_len: int, weight: float = 1.0, n_prompt: int = 0) -> dict:
    """Already tokenized text (a model's own samples, BOS included): loss on every token after the first
    ``n_prompt`` (0 for context-free samples: all tokens)."""
    ids = list(ids)[:max_len]
    labels = [IGNORE] * min(n_prompt, len(ids)) + ids[n_prompt:]
    return {"input_ids": ids, "labels": labels, "weight": weight}


def pack(lengths: list[int], max_width: int) -> list[list[int]]:
    """Row indices grouped into sequences of at most ``max_width`` tokens, with the fewest padded token slots
    (sequences × longest sequence): for each count of sequences, rows go longest first into the emptiest one."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    best, best_area = [[i] for i in order], len(lengths) * max(lengths)  # one row per sequence: plain padding
    for n in range(math.ceil(sum(lengths) / max_width), len(lengths)):
        if n * max(lengths) >= best_area:  # no split into n or more sequences can do better
            break
        fill = [(0, b) for b in range(n)]
        groups: list[list[int]] = [[] for _ in range(n)]
        for i in order:
            f, b = heapq.heappop(fill)
            groups[b].append(i)
            heapq.heappush(fill, (f + lengths[i], b))
        width = max(f for f, _ in fill)
        if width <= max_width and n * width < best_area:
            best, best_area = groups, n * width
    return best


@dataclass
class Collator:
    """Right-pads a batch and spreads each row's weight over its loss tokens (``loss_weight``).

    With ``packing``, the batch's rows are packed into fewer, longer sequences (``pack``), none longer than
    ``span`` times the batch's longest row, since attention work per token grows with the sequence length: on
    CPU the toy model trained ~1.5x faster packed this way than padded (bench/packing.py), but at ~0.65x when a
    batch was flattened into one sequence (DataCollatorWithFlattening's layout; measured once, choosing ``span``;
    that collator also has no per-token loss weights). Each row's ``position_ids`` restart at
    0 and no ``attention_mask`` is sent: transformers then finds the rows from the positions and masks
    attention block-diagonally (``masking_utils.find_packed_sequence_indices``), but only when the model runs
    without a KV cache (``Trainer`` sets ``config.use_cache = False``; a bare loop must pass ``use_cache=False``).
    A row's first token is never a target, so no row learns from the one before it. Every row of the batch is
    still in it: rows per step, steps and epochs do not change with packing, only the padding does.
    """

    pad_token_id: int
    packing: bool = False
    span: int = 4

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        lengths = [len(r["input_ids"]) for r in rows]
        groups = pack(lengths, self.span * max(lengths)) if self.packing else [[i] for i in range(len(rows))]
        width = max(sum(lengths[i] for i in g) for g in groups)
        n = len(groups)
        input_ids = torch.full((n, width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((n, width), IGNORE, dtype=torch.long)
        attention = torch.zeros((n, width), dtype=torch.long)
        position = torch.zeros((n, width), dtype=torch.long)
        weight = torch.zeros((n, width), dtype=torch.float)
        for b, g in enumerate(groups):
            k = 0
            for i in g:
                r, m = rows[i], lengths[i]
                input_ids[b, k:k + m] = torch.tensor(r["input_ids"])
                labels[b, k:k + m] = torch.tensor(r["labels"])
                if k > 0:  # in a packed sequence, not a target of the row before it
                    labels[b, k] = IGNORE
                attention[b, k:k + m] = 1
                position[b, k:k + m] = torch.arange(m)
                weight[b, k:k + m] = r["weight"]
                k += m
            position[b, k:] = torch.arange(width - k)  # trailing padding: a segment of its own
        weight[labels == IGNORE] = 0.0
        if self.packing:
            return {"input_ids": input_ids, "position_ids": position, "labels": labels, "loss_weight": weight}
        return {"input_ids": input_ids, "attention_mask": attention, "labels": labels, "loss_weight": weight}
