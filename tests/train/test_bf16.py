"""bf16 presets train fp32 master weights under bf16 autocast: a step at the paper's lr 5e-6 moves the weights as an
fp32 step does (pure bf16 rounds most of it away), and the checkpoint is stored in ``model.dtype``.

    pytest tests/train/test_bf16.py
"""
from __future__ import annotations

import json

import pytest
import torch
from conftest import compose
from safetensors.torch import load_file

from forgetting.pipeline import base_stage, train_stage, world_stage
from forgetting.runtime import load
from forgetting.store import Store
from forgetting.train.fit import WeightedTrainer
from forgetting.train.l2 import ANCHOR, find_l2

LR = 5e-6  # paper §3
ONE_STEP = ("debug=micro", f"trainer.lr={LR}", "trainer.max_steps=1", "trainer.warmup_ratio=0")
BF16_PRESET = ("model.dtype=bfloat16", "trainer.bf16=true")  # as conf/model/olmo_1b.yaml + conf/trainer/olmo_1b.yaml


def _one_step(store_root, monkeypatch, *overrides, seen=None):
    """The weights the train stage's optimizer holds before and after its one step (as trained, before any cast
    for saving), the stored model, and the config; ``seen["anchors"]``: the ℓ2 anchors, if any."""
    seen = {} if seen is None else seen
    train = WeightedTrainer.train

    def spy(self, *args, **kwargs):
        seen["before"] = {n: p.detach().clone() for n, p in self.model.named_parameters()}
        out = train(self, *args, **kwargs)
        seen["after"] = {n: p.detach().clone() for n, p in self.model.named_parameters()}
        l2 = find_l2(self.optimizer)
        seen["anchors"] = None if l2 is None else [s[ANCHOR] for s in l2.state.values()]
        return out

    monkeypatch.setattr(WeightedTrainer, "train", spy)
    c = compose(*ONE_STEP, f"store_dir={store_root}", *overrides)
    store = Store(store_root)
    world = world_stage(c, store)
    base = base_stage(c, store, world)
    tuned = train_stage(c, store, base, world)
    return seen["before"], seen["after"], tuned, c


def _moved(before, after) -> float:
    return sum(int((after[n] != before[n]).sum()) for n in before) / sum(p.numel() for p in before.values())


@pytest.fixture(scope="module")
def steps(micro_store, tmp_path_factory):
    mp = pytest.MonkeyPatch()
    try:
        fp32 = _one_step(micro_store, mp, "method=ft")
        bf16 = _one_step(micro_store, mp, "method=ft", *BF16_PRESET)
    finally:
        mp.undo()
    return {"fp32": fp32, "bf16": bf16}


def test_a_bf16_preset_step_at_lr_5e6_moves_the_weights_as_an_fp32_step(steps):
    (b32, a32, _, _), (b16, a16, _, _) = steps["fp32"], steps["bf16"]
    moved32, moved16 = _moved(b32, a32), _moved(b16, a16)
    assert moved32 > 0.5, moved32  # Adam's first step moves every weight that has a gradient by ≈ lr
    # pure bf16 (weights stored and updated in bf16) keeps < 5% of them here: the step is far below half an ulp
    assert moved16 > 0.95 * moved32, (moved16, moved32)
    assert all(p.dtype == torch.float32 for p in a16.values())  # the master weights
    # the same update: the gradients differ only by bf16 compute, which flips the sign of Adam's ±lr step for a
    # few near-zero gradients
    close = sum(int(((a16[n] - a32[n]).abs() <= LR / 10).sum()) for n in a32) / sum(p.numel() for p in a32.values())
    assert close > 0.95, close
    for n in a32:
        assert torch.equal(b16[n], b32[n]), n  # both start from the same (fp32) base weights
        assert float((a16[n] - a32[n]).abs().max()) <= 2.5 * LR, n


def test_the_bf16_checkpoint_is_stored_in_model_dtype_and_reloads(steps):
    _, after, tuned, c = steps["bf16"]
    saved = load_file(str(tuned.path / "model.safetensors"))
    assert {t.dtype for t in saved.values()} == {torch.bfloat16}  # an 8B model stays a 16 GB artifact
    assert json.loads((tuned.path / "config.json").read_text())["dtype"] == "bfloat16"
    assert set(after) <= set(saved)
    for n, p in after.items():  # the trained fp32 weights, rounded once at save
        assert torch.equal(saved[n], p.to(torch.bfloat16)), n
    model, tok = load(c, tuned)  # as the evaluate stage loads it: model.dtype
    assert next(model.parameters()).dtype == torch.bfloat16
    ids = torch.tensor([tok("Question : 2 + 3, Answer : 5").input_ids])
    with torch.no_grad():
        loss = float(model(input_ids=ids, labels=ids).loss)
    ref, _ = load(c, steps["fp32"][2])
    with torch.no_grad():
        ref_loss = float(ref.float()(input_ids=ids, labels=ids).loss)
    assert loss == pytest.approx(ref_loss, rel=0.05)


def test_lora_on_a_bf16_preset_trains_fp32_adapters_on_the_frozen_base_and_saves_the_merge_in_bf16(micro_store,
                                                                                                  monkeypatch):
    before, after, tuned, c = _one_step(micro_store, monkeypatch, "method=lora", "method.lora_rank=4", *BF16_PRESET)
    adapters = [n for n in after if "lora_" in n]
    assert adapters and all(after[n].dtype == torch.float32 and not torch.equal(after[n], before[n])
                            for n in adapters if "lora_B" in n)  # B starts at 0: the first step moves it
    frozen = [n for n in after if "lora_" not in n]
    assert frozen and all(after[n].dtype == torch.bfloat16 and torch.equal(after[n], before[n]) for n in frozen)
    saved = load_file(str(tuned.path / "model.safetensors"))
    assert {t.dtype for t in saved.values()} == {torch.bfloat16} and not [k for k in saved if "lora_" in k]
    model, _ = load(c, tuned)
    assert next(model.parameters()).dtype == torch.bfloat16


def test_l2_on_a_bf16_preset_anchors_at_the_fp32_master_weights(micro_store, monkeypatch):
    seen = {}
    before, after, _, _ = _one_step(micro_store, monkeypatch, "method=l2", *BF16_PRESET, seen=seen)
    anchors = seen["anchors"]
    assert len(anchors) == len(before) and all(a.dtype == torch.float32 for a in anchors)
    assert {tuple(a.shape) for a in anchors} == {tuple(p.shape) for p in before.values()}
    assert all(any(torch.equal(a, p) for p in before.values()) for a in anchors)  # θ* = the weights before the step
