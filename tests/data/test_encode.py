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


def test_rows_prompts_and_lm_eval_contexts_start_alike_without_bos(tiny_olmo):
    """OLMo-1B-hf's tokenizer declares no BOS: rows, prompts, held-out documents and lm-eval's contexts all start
    with the text itself, as ``tokenizer(text)`` does (on the old code every row started with None)."""
    from lm_eval.models.huggingface import HFLM

    from forgetting.data.encode import encode_prompt, start_ids
    from forgetting.evaluate.heldout import heldout_loss
    from forgetting.models import load_model

    tok = load_tokenizer(tiny_olmo)
    assert tok.bos_token_id is None and tok.eos_token == "<|endoftext|>" and tok.pad_token_id is not None
    prompt, response = "Question : Tom has 2 pens. How many?, Answer :", "Tom has 2 pens. The answer is: 2"
    text_ids = tok(prompt, add_special_tokens=False).input_ids
    assert start_ids(tok) == [] and tok(prompt).input_ids == text_ids
    assert encode_prompt(tok, prompt) == text_ids
    ex = encode_pair(tok, prompt, response, max_len=512)
    assert ex["input_ids"][:len(text_ids)] == text_ids and None not in ex["input_ids"]
    assert ex["labels"][:len(text_ids)] == [IGNORE] * len(text_ids) and ex["input_ids"][-1] == tok.eos_token_id
    doc = encode_text(tok, "The river town holds a market.", max_len=512)
    assert doc["input_ids"] == tok("The river town holds a market.").input_ids + [tok.eos_token_id]
    # lm-eval's HFLM, as run_lmeval builds it (an in-memory tokenizer; add_bos_token unset, or true as the
    # EvalConfig default), encodes a context exactly as the prompt the model was trained on
    model = load_model(tiny_olmo)
    for hflm_args in ({}, {"add_bos_token": True}):
        lm = HFLM(pretrained=model, tokenizer=tok, batch_size=2, device="cpu", **hflm_args)
        assert lm.tok_encode(prompt) == encode_prompt(tok, prompt)
        assert lm.tok_batch_encode([prompt])[0][0].tolist() == encode_prompt(tok, prompt)
    assert heldout_loss(model, tok, ["The river town holds a market.", "def add(a, b):"], 64) > 0


def test_toy_rows_keep_their_bos(micro_store):
    """The toy tokenizer adds BOS itself: its rows are what they always were, ``[BOS] + text (+ EOS)``."""
    from forgetting.data.encode import encode_prompt, start_ids

    tok = _tok(micro_store)
    assert start_ids(tok) == [tok.bos_token_id]
    for text in ("The capital of Kozeia is Lamo.", "Question : 2 + 3?, Answer :"):
        ids = tok(text, add_special_tokens=False).input_ids
        assert encode_prompt(tok, text) == [tok.bos_token_id] + ids
        assert encode_text(tok, text, 512)["input_ids"] == [tok.bos_token_id] + ids + [tok.eos_token_id]


def test_a_tokenizer_that_appends_eos_starts_rows_with_its_prefix_only(tiny_olmo):
    """Some OLMo tokenizer files carry a post-processor that appends EOS to every text: only what comes before
    the text starts a row, so a document still ends with exactly one EOS."""
    from tokenizers import processors

    from forgetting.data.encode import start_ids

    tok = load_tokenizer(tiny_olmo)
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="$A <|endoftext|>", special_tokens=[("<|endoftext|>", tok.eos_token_id)])
    assert tok("a b").input_ids[-1] == tok.eos_token_id
    assert start_ids(tok) == []
    assert encode_text(tok, "a b", 64)["input_ids"] == tok("a b", add_special_tokens=False).input_ids + [
        tok.eos_token_id]
