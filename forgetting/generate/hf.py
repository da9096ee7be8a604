"""The Hugging Face generation backend: batched sampling from token-id prompts.

    pytest tests/generate/test_context_free.py

Prompts are token ids, never strings, so no tokenizer can add a second BOS (paper §2, Table 1).
Seeding is per call: ``sample(..., seed=s)`` draws the same completions for the same prompts every time.
"""
from __future__ import annotations

import torch


class HFBackend:
    def __init__(self, model, tokenizer):
        self.model = model.eval()
        self.tokenizer = tokenizer

    @torch.no_grad()
    def sample(self, prompts: list[list[int]], *, temperature: float, top_p: float, max_new_tokens: int,
               seed: int, batch_size: int) -> list[list[int]]:
        """Completion token ids for each prompt (EOS kept when the model ends the text, padding removed);
        ``temperature`` 0 is greedy decoding (``top_p`` and ``seed`` unused), as in vLLM."""
        torch.manual_seed(seed)
        decoding = dict(do_sample=True, temperature=temperature, top_p=top_p, top_k=0) if temperature > 0 else \
            dict(do_sample=False)
        pad, eos = self.tokenizer.pad_token_id, self.tokenizer.eos_token_id
        out: list[list[int]] = []
        for start in range(0, len(prompts), batch_size):
            batch = prompts[start:start + batch_size]
            width = max(map(len, batch))
            # left padding keeps every prompt's last token at the same position for generation
            ids = torch.tensor([[pad] * (width - len(p)) + p for p in batch], device=self.model.device)
            mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch], device=self.model.device)
            gen = self.model.generate(
                input_ids=ids, attention_mask=mask, **decoding, max_new_tokens=max_new_tokens, pad_token_id=pad,
                eos_token_id=eos,
            )
            for row in gen[:, width:].tolist():
                if eos in row:  # generate() pads finished rows; everything after the first EOS is padding
                    row = row[: row.index(eos) + 1]
                elif pad in row:
                    row = row[: row.index(pad)]
                out.append(row)
        return out
