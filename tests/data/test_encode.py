"""Masking: answer-only loss for (prompt, response) pairs, all-token loss for text and samples."""
from __future__ import annotations

import torch

from forgetting.data.encode import IGNORE, Collator, encode_ids, encode_pair, encode_text
from forgetting.data.mix import n_augment, train_steps
from forgetting.models import load_tokenizer


def _tok(micro_store):
    return load_tokenizer(next((micro_store / "world").glob("*/tokenizer")))


def test_pair_loss_on_answer_tokens_only(micro_store):
    tok = _tok(micro_store)
    prompt, response = "Question : Tom has 2 pens. How many?, Answer :", "Tom has 2 pens. The answer is: 2"
    ex = encode_pair(tok, prompt, response, max_len=512)
    n_prompt = 1 + len(tok(prompt, add_special_tokens=False).input_ids)
    assert ex["input_ids"][0] == tok.bos_token_id
    assert ex["labels"][:n_prompt] == [IGNORE] * n_prompt
    assert ex["labels"][n_prompt:] == ex["input_ids"][n_prompt:]
    assert tok.decode(ex["labels"][n_prompt:]) == " " + response + tok.eos_token
    # the prompt the evaluator sends tokenizes to exactly the masked prefix
    assert tok(prompt).input_ids == ex["input_ids"][:n_prompt]


def test_text_and_samples_take_loss_on_every_token(micro_store):
    tok = _tok(micro_store)
    ex = encode_text(tok, "The capital of Zorbia is Kelmar.", max_len=512)
    assert ex["labels"] == ex["input_ids"]
    assert ex["input_ids"][0] == tok.bos_token_id and ex["input_ids"][-1] == tok.eos_token_id
    ids = [tok.bos_token_id, 5, 6, 7]
    assert encode_ids(ids, 512, weight=0.5) == {"input_ids": ids, "labels": ids, "weight": 0.5}


def test_collator_spreads_weights_over_loss_tokens_only():
    rows = [{"input_ids": [1, 5, 6, 7], "labels": [IGNORE, IGNORE, 6, 7], "weight": 1.0},
            {"input_ids": [1, 8], "labels": [1, 8], "weight": 0.25}]
    batch = Collator(pad_token_id=0)(rows)
    assert batch["input_ids"].tolist() == [[1, 5, 6, 7], [1, 8, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    assert torch.equal(batch["loss_weight"], torch.tensor([[0, 0, 1, 1], [0.25, 0.25, 0, 0]]))


def test_ratio_gives_exact_row_counts_and_steps_ignore_the_mix():
    assert [n_augment(400, r) for r in (0.1, 0.5, 1.0, 2.0)] == [40, 200, 400, 800]
    assert train_steps(3000, 2.0, 32) == 188  # ceil(2 * 3000 / 32), whatever the mix
    assert train_steps(3000, 2.0, 32, max_steps=7) == 7
