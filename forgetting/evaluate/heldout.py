"""Held-out loss on the pretraining distribution: the forgetting measure of paper 003 (lower is better).

    python launch.py +experiment=smollm2 debug=dry

Every loss here is a ratio estimate, Σ (loss of a row's labelled tokens) / Σ (its labelled tokens): the per-row
pairs (:func:`row_losses`) are what the report's bootstrap over documents resamples (``forgetting.report``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from forgetting.data.encode import IGNORE, Collator, encode_text


def heldout_loss(model, tokenizer, texts: list[str], max_len: int, batch_size: int = 32) -> float:
    """Mean per-token cross-entropy over ``[BOS] text EOS`` documents (every token counted once), encoded as the
    training rows are (``forgetting.data.encode.encode_text``: BOS only if the tokenizer adds one)."""
    return rows_loss(model, [encode_text(tokenizer, t, max_len) for t in texts], tokenizer.pad_token_id, batch_size)


@torch.no_grad()
def row_losses(model, rows: list[dict], pad_token_id: int, batch_size: int = 32) -> list[tuple[float, int]]:
    """Per encoded row (``forgetting.data.encode``): (summed cross-entropy of its labelled tokens, their count)."""
    model.eval()
    collate = Collator(pad_token_id)
    device = next(model.parameters()).device
    # batches of similar lengths (less padding); each row's loss is its own, so the order only moves the work
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]["input_ids"]))
    out: list[tuple[float, int]] = [(0.0, 0)] * len(rows)
    for start in range(0, len(rows), batch_size):
        part = order[start:start + batch_size]
        batch = collate([rows[i] for i in part])
        logits = model(input_ids=batch["input_ids"].to(device),
                       attention_mask=batch["attention_mask"].to(device)).logits[:, :-1].float()
        target = batch["labels"][:, 1:].to(device)
        ce = F.cross_entropy(logits.reshape(-1, logits.size(-1)), target.reshape(-1), ignore_index=IGNORE,
                             reduction="none").view(target.shape)
        for i, loss, count in zip(part, ce.double().sum(1).tolist(), (target != IGNORE).sum(1).tolist()):
            out[i] = (loss, count)
    return out


def ratio(pairs: list[tuple[float, int]]) -> float:
    """Σ numerator / Σ denominator (0 when nothing is counted)."""
    return sum(p[0] for p in pairs) / max(sum(p[1] for p in pairs), 1)


def rows_loss(model, rows: list[dict], pad_token_id: int, batch_size: int = 32) -> float:
    """Mean per-token cross-entropy of the labelled tokens of encoded rows (``forgetting.data.encode``)."""
    return ratio(row_losses(model, rows, pad_token_id, batch_size))
