"""ℓ2 to the initial weights at the optimizer: zero at init, the exact gradient 2λ(θ − θ*), the anchor survives a
resume, the logged penalty is λ‖θ − θ*‖², and a strong anchor holds the weights."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
from conftest import compose

from forgetting.config import TrainerConfig
from forgetting.pipeline import base_stage, train_stage, world_stage
from forgetting.runtime import load
from forgetting.store import Store
from forgetting.train.l2 import ANCHOR, find_l2, l2_penalty, with_l2


def _tiny_model(seed=0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32))


def _backward(model, seed):
    model.zero_grad(set_to_none=True)
    ids = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(seed))
    model(input_ids=ids, labels=ids).loss.backward()


def _optimizers():
    yield "sgd", torch.optim.SGD, {"lr": 0.05}
    yield "adamw", torch.optim.AdamW, {"lr": 0.05, "weight_decay": 0.01}
    try:
        import bitsandbytes as bnb
    except ImportError:  # an optional extra (gpu); the paper's optimizer (Appendix B)
        return
    yield "adamw8bit", bnb.optim.AdamW8bit, {"lr": 0.05, "min_8bit_size": 0}  # 8-bit state even for tiny tensors


OPTIMIZERS = list(_optimizers())


def test_penalty_is_zero_before_the_first_step_and_lambda_times_squared_distance_after():
    model = _tiny_model()
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    lam = 0.3
    opt = with_l2(torch.optim.AdamW)(model.parameters(), lr=0.05, l2_lambda=lam)
    assert opt.penalty() == 0.0
    _backward(model, 0)
    opt.step()
    params = dict(model.named_parameters())
    for name, p in params.items():  # every trainable tensor is anchored at its value before the first update
        assert torch.equal(opt.state[p][ANCHOR], start[name]), name
        assert not torch.equal(p.detach(), start[name]), name
    expected = lam * sum(float((params[n].detach() - start[n]).pow(2).sum()) for n in start)
    assert expected > 0
    assert opt.penalty() == pytest.approx(expected, rel=1e-5)
    assert l2_penalty(opt) == opt.penalty() and find_l2(opt) is opt
    assert l2_penalty(torch.optim.AdamW(model.parameters())) is None


@pytest.mark.parametrize("name,cls,kwargs", OPTIMIZERS, ids=[o[0] for o in OPTIMIZERS])
def test_the_update_uses_loss_gradient_plus_two_lambda_displacement(name, cls, kwargs):
    """The ℓ2 optimizer takes the same steps as the plain optimizer fed ∇loss + 2λ(θ − θ*) by hand."""
    lam = 0.7
    model, twin = _tiny_model(), _tiny_model()
    start = [p.detach().clone() for p in twin.parameters()]
    opt = with_l2(cls)(model.parameters(), l2_lambda=lam, **kwargs)
    ref = cls(twin.parameters(), **kwargs)
    assert isinstance(opt, cls)
    for step in range(4):
        _backward(model, step)
        _backward(twin, step)
        # computed with the same float ops as the optimizer, so that 8-bit quantization sees identical inputs
        expected = [q.grad.add(q.detach() - s, alpha=2 * lam) for q, s in zip(twin.parameters(), start)]
        for q, g in zip(twin.parameters(), expected):
            q.grad = g.clone()
        opt.step()
        ref.step()
        for p, q, g in zip(model.parameters(), twin.parameters(), expected):
            assert torch.allclose(p.grad, g, rtol=1e-5, atol=1e-7)  # the gradient the optimizer used
            assert torch.allclose(p.detach(), q.detach(), rtol=1e-5, atol=1e-6)
    moved = sum(float((p.detach() - s).pow(2).sum()) for p, s in zip(model.parameters(), start))
    assert moved > 0 and opt.penalty() == pytest.approx(lam * moved, rel=1e-4)
    if name != "sgd":  # the optimizer's own state was created as usual, beside the anchor
        assert all(len(opt.state[p]) > 1 for p in model.parameters())


@pytest.mark.parametrize("name,cls,kwargs", OPTIMIZERS, ids=[o[0] for o in OPTIMIZERS])
def test_a_resumed_optimizer_keeps_the_original_anchor(name, cls, kwargs):
    model = _tiny_model()
    start = [p.detach().clone() for p in model.parameters()]
    opt = with_l2(cls)(model.parameters(), l2_lambda=0.5, **kwargs)
    for step in range(3):
        _backward(model, step)
        opt.step()
    saved = opt.state_dict()

    resumed = with_l2(cls)(model.parameters(), l2_lambda=0.5, **kwargs)  # same weights, as after a restart
    resumed.load_state_dict(saved)
    for p, s in zip(model.parameters(), start):
        assert torch.equal(resumed.state[p][ANCHOR], s)
        assert not torch.equal(p.detach(), s)
    assert resumed.penalty() == pytest.approx(opt.penalty(), rel=1e-6) and resumed.penalty() > 0


def test_penalty_gradient_is_not_clipped():
    """Clipping (HF Trainer, DeepSpeed) happens before step(): a clipped-to-zero loss gradient still leaves
    the full pull 2λ(θ − θ*) toward the anchor."""
    model = _tiny_model()
    start = [p.detach().clone() for p in model.parameters()]
    opt = with_l2(torch.optim.SGD)(model.parameters(), lr=0.1, l2_lambda=2.0)
    _backward(model, 0)
    opt.step()
    before = [p.detach().clone() for p in model.parameters()]
    _backward(model, 1)
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1e-12)
    opt.step()
    for p, b, s in zip(model.parameters(), before, start):
        assert torch.allclose(p.detach(), b - 0.1 * 2 * 2.0 * (b - s), atol=1e-6)


def _squared_distance(path_a, path_b) -> float:
    """‖θ_a − θ_b‖² over the parameters of two saved checkpoints (a tied tensor counted once)."""
    from transformers import AutoModelForCausalLM

    a, b = (dict(AutoModelForCausalLM.from_pretrained(str(p)).named_parameters()) for p in (path_a, path_b))
    assert a.keys() == b.keys()
    return sum(float((a[k].detach() - b[k].detach()).pow(2).sum()) for k in a)


def _ft_rows(c, world, tokenizer):
    from forgetting.data.datasets import load_downstream
    from forgetting.runtime import encode_example

    return [encode_example(tokenizer, c, r["query"], r["response"]) for r in load_downstream(c.dataset, world)]


def test_training_logs_the_penalty_and_a_resumed_run_keeps_the_anchor(micro_store, tmp_path):
    """Through the HF Trainer: the logged ``l2`` is λ‖θ − θ*‖² of the saved weights to the base, and a run resumed
    from a mid-run checkpoint continues with the base as anchor (re-anchoring would restart the penalty near 0)."""
    from forgetting.train.trainer import train

    c = compose("debug=micro", f"store_dir={micro_store}")
    store = Store(micro_store)
    world = world_stage(c, store)
    base = base_stage(c, store, world)
    model, tok = load(c, base)
    rows = _ft_rows(c, world, tok)
    lam = 0.1
    from forgetting.parts.l2 import L2, L2Knobs

    t = TrainerConfig(lr=3e-3, batch_size=8, save_steps=3, logging_steps=1, scheduler="constant", warmup_ratio=0.0)
    kw = dict(steps=6, seed=0, hooks=[L2(L2Knobs(l2_lambda=lam))])
    full = train(model, tok, rows, tmp_path / "a", tmp_path / "work_a", t, **kw)
    curve = {e["step"]: e["l2"] for e in map(json.loads, open(tmp_path / "a" / "train_log.jsonl")) if "l2" in e}
    assert full["steps"] == 6 and sorted(curve) == [1, 2, 3, 4, 5, 6]
    # the weights drift from the anchor: a re-anchored resume at step 3 would log about curve[1] at step 4
    assert 0 < curve[1] < curve[2] < curve[3] < curve[4] and curve[4] > 1.5 * curve[1], curve

    assert curve[6] == pytest.approx(lam * _squared_distance(base.path, tmp_path / "a"), rel=1e-4)

    shutil.copytree(tmp_path / "work_a" / "checkpoint-3", tmp_path / "work_b" / "checkpoint-3")
    model_b, _ = load(c, base)  # the process restarts from the base; the checkpoint brings the step-3 weights
    resumed = train(model_b, tok, rows, tmp_path / "b", tmp_path / "work_b", t, **kw)
    assert resumed["resumed_from"].endswith("checkpoint-3") and resumed["steps"] == 6
    again = {e["step"]: e["l2"] for e in map(json.loads, open(tmp_path / "b" / "train_log.jsonl")) if "l2" in e}
    assert sorted(again) == [1, 2, 3, 4, 5, 6]  # 1–3 come back with the checkpoint's trainer state
    for s in (4, 5, 6):
        assert again[s] == pytest.approx(curve[s], rel=1e-4), (s, again[s], curve[s])


def _distance_to_base(store_root, *overrides):
    c = compose("debug=micro", f"store_dir={store_root}", "trainer.max_steps=12", *overrides)
    store = Store(store_root)
    world = world_stage(c, store)
    base = base_stage(c, store, world)
    tuned = train_stage(c, store, base, world)
    (m0, _), (m1, _) = load(c, base), load(c, tuned)
    with torch.no_grad():
        sq = sum(float((p0 - p1).pow(2).sum()) for p0, p1 in zip(m0.parameters(), m1.parameters()))
        biggest = max(float((p0 - p1).abs().max()) for p0, p1 in zip(m0.parameters(), m1.parameters()))
    return sq ** 0.5, biggest


def test_huge_lambda_keeps_the_weights_near_the_base(store_copy):
    free, free_max = _distance_to_base(store_copy, "method=ft")
    held, held_max = _distance_to_base(store_copy, "method=l2", "method.l2_lambda=1e4")
    assert free > 0 and held > 0  # both trained
    assert held < 0.2 * free, (held, free)
    assert held_max < free_max
