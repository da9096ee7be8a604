"""Sequence packing (``trainer.packing``): a packed batch trains exactly like the same rows padded.

Per-token losses and gradients match (answer-only masks, weights != 1, sdpa and eager attention), the loss-token
count is unchanged, and ``train(..., packing=True)`` takes the same steps to the same weights as padding.
"""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from conftest import compose

from forgetting.config import TrainerConfig
from forgetting.data.encode import IGNORE, Collator, encode_pair, encode_text, pack
from forgetting.data.jsonl import read_jsonl
from forgetting.models import load_tokenizer
from forgetting.parts.base import Optimizer


class SGD(Optimizer):
    """Plain SGD (not a registered part): padding and packing must give the same update, which SGD shows exactly."""

    name = "sgd"
    hf_optim = "sgd"


def _tiny_llama(attn: str, seed: int = 0, vocab: int = 64):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    # use_cache stays at its default (True), as in a loaded checkpoint: the Trainer must turn it off
    return LlamaForCausalLM(LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                        attn_implementation=attn))


def _rows(seed: int = 0) -> list[dict]:
    """Prompt+answer rows (loss on the answer only) and text rows (loss on every token) of varied lengths and
    weights, as a CFS mix has them."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for i, n in enumerate([9, 23, 5, 14, 30, 7, 11, 3, 18, 6]):
        ids = torch.randint(4, 64, (n,), generator=g).tolist()
        if i % 2 == 0:
            k = max(1, n // 3)  # answer-only: the prompt is masked
            rows.append({"input_ids": ids, "labels": [IGNORE] * k + ids[k:], "weight": 1.0 if i % 4 else 0.75})
        else:
            rows.append({"input_ids": ids, "labels": list(ids), "weight": [0.5, 2.0, 0.25][i % 3]})
    return rows


def _token_losses(logits: torch.Tensor, batch: dict, groups: list[list[int]], lengths: list[int]) -> dict:
    """Weighted CE of every target token, keyed by (row, position in the row)."""
    ce = F.cross_entropy(logits[:, :-1].transpose(1, 2), batch["labels"][:, 1:], ignore_index=IGNORE,
                         reduction="none") * batch["loss_weight"][:, 1:]
    out = {}
    for b, g in enumerate(groups):
        k = 0
        for i in g:
            for t in range(1, lengths[i]):
                if batch["labels"][b, k + t] != IGNORE:
                    out[(i, t)] = ce[b, k + t - 1]
            k += lengths[i]
    return out


def test_pack_keeps_every_row_once_and_respects_the_width():
    lengths = [9, 23, 5, 14, 30, 7, 11, 3, 18, 6]
    for width in (30, 45, 60, 1000):
        groups = pack(lengths, width)
        assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
        assert max(sum(lengths[i] for i in g) for g in groups) <= width
    assert len(pack(lengths, 1000)) < len(lengths)
    assert pack([5, 5, 5], 5) == [[0], [1], [2]]  # nothing fits together: plain padding


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_losses_and_gradients_equal_unpacked(attn, tmp_path):
    from transformers import TrainingArguments

    from forgetting.train.fit import Rows, WeightedTrainer

    rows = _rows()
    lengths = [len(r["input_ids"]) for r in rows]
    padded, packed = Collator(0)(rows), Collator(0, packing=True)(rows)
    groups = pack(lengths, Collator(0).span * max(lengths))
    # it really packs: fewer sequences, several rows in one, far less padding
    assert packed["input_ids"].shape[0] < len(rows) and max(map(len, groups)) > 1
    assert packed["input_ids"].numel() < padded["input_ids"].numel()
    assert "attention_mask" not in packed
    # the same loss tokens with the same total weight
    assert (packed["labels"][:, 1:] != IGNORE).sum() == (padded["labels"][:, 1:] != IGNORE).sum()
    assert torch.isclose(packed["loss_weight"][:, 1:].sum(), padded["loss_weight"][:, 1:].sum())

    model = _tiny_llama(attn)
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none", per_device_train_batch_size=4)
    trainer = WeightedTrainer(model=model, args=args, train_dataset=Rows(rows), data_collator=Collator(0))
    assert model.config.use_cache is False  # without this, transformers ignores the packed positions

    results = []
    for batch, grp in ((padded, [[i] for i in range(len(rows))]), (packed, groups)):
        model.zero_grad(set_to_none=True)
        loss, out = trainer.compute_loss(model, dict(batch), return_outputs=True)
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters()}
        results.append((loss.detach(), _token_losses(out.logits.detach(), batch, grp, lengths), grads))
    (loss_a, tok_a, grad_a), (loss_b, tok_b, grad_b) = results

    assert tok_a.keys() == tok_b.keys() and len(tok_a) > 50
    assert max(abs(float(tok_a[k] - tok_b[k])) for k in tok_a) < 1e-5
    assert torch.allclose(loss_a, loss_b, atol=1e-6)
    for name in grad_a:
        assert torch.allclose(grad_a[name], grad_b[name], atol=1e-5, rtol=1e-4), name


def test_packing_leaks_nothing_across_rows():
    """Changing one row's tokens changes no other row's losses (the block-diagonal mask, verified)."""
    rows = _rows()
    lengths = [len(r["input_ids"]) for r in rows]
    collator = Collator(0, packing=True)
    groups = pack(lengths, collator.span * max(lengths))
    first = next(g for g in groups if len(g) > 1)[0]  # a row that others are packed after
    changed = [dict(r) for r in rows]
    changed[first] = {**rows[first], "input_ids": [(t + 7) % 60 + 4 for t in rows[first]["input_ids"]]}
    model = _tiny_llama("sdpa").eval()
    losses = []
    for rs in (rows, changed):
        batch = collator(rs)
        with torch.no_grad():
            logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits
        losses.append(_token_losses(logits, batch, groups, lengths))
    others = [k for k in losses[0] if k[0] != first]
    assert max(abs(float(losses[0][k] - losses[1][k])) for k in others) < 1e-5
    assert max(abs(float(losses[0][k] - losses[1][k])) for k in losses[0] if k[0] == first) > 1e-3


def test_train_with_packing_takes_the_same_steps_to_the_same_weights(micro_store, tmp_path):
    """Rows per step are unchanged, so the run is the same run: same steps, same losses, same weights (from the
    pretrained micro model, whose attention matters: a mask that leaks across rows changes these losses)."""
    from forgetting.models import load_model
    from forgetting.train.trainer import train

    world = next((micro_store / "world").glob("*/"))
    base = next((micro_store / "pretrain").glob("*/"))
    tok = load_tokenizer(world / "tokenizer")
    rows = [encode_pair(tok, f"Question : {r['query']}, Answer :", r["response"], 96)
            for r in read_jsonl(world / "down_train.jsonl")[:24]]
    # the micro tokenizer makes long rows: cut the text rows to varied lengths, so that batches have padding
    rows += [encode_text(tok, r["text"], 16 + 8 * (i % 10), weight=0.5)
             for i, r in enumerate(read_jsonl(world / "corpus.jsonl")[:24])]
    init = load_model(base).state_dict()
    results = []
    for packing in (False, True):
        model = load_model(base)
        out = tmp_path / f"out-{packing}"
        t = TrainerConfig(lr=0.05, batch_size=8, warmup_ratio=0.0, logging_steps=1, save_steps=100, packing=packing)
        summary = train(model, tok, rows, out, tmp_path / f"work-{packing}", t, steps=4, hooks=[SGD()])
        losses = [e["loss"] for e in map(json.loads, (out / "train_log.jsonl").read_text().splitlines())
                  if "loss" in e]
        results.append((summary, losses, {n: p.detach().clone() for n, p in model.named_parameters()}))
    (s_a, l_a, w_a), (s_b, l_b, w_b) = results
    assert s_a["steps"] == s_b["steps"] == 4 and len(l_a) == len(l_b) == 4
    assert l_a == pytest.approx(l_b, abs=1e-4)
    assert max(float((w_a[n] - init[n]).abs().max()) for n in w_a) > 1e-3  # training moved the weights
    for n in w_a:
        assert torch.allclose(w_a[n], w_b[n], atol=1e-5), n


def test_trainer_packing_reaches_the_collator_from_the_config(store_copy, monkeypatch):
    from forgetting.pipeline import base_stage, train_stage, world_stage
    from forgetting.store import Store

    seen = []
    call = Collator.__call__

    def spy(self, rows):
        batch = call(self, rows)
        seen.append((self.packing, len(rows), batch["input_ids"].shape[0]))
        return batch

    monkeypatch.setattr(Collator, "__call__", spy)
    c = compose("debug=micro", f"store_dir={store_copy}", "trainer.packing=true", "trainer.max_steps=2")
    store = Store(store_copy)
    world = world_stage(c, store)
    art = train_stage(c, store, base_stage(c, store, world), world)
    assert json.loads((art.path / "train_summary.json").read_text())["steps"] == 2
    assert seen and all(packing and n == c.trainer.batch_size for packing, n, _ in seen)  # rows per step kept
