"""ℓ2 to the initial weights: zero at init, the exact gradient 2λ(θ − θ*), and a strong anchor holds the weights."""
from __future__ import annotations

import pytest
import torch
from conftest import compose

from forgetting.pipeline import base_stage, load, train_stage, world_stage
from forgetting.store import Store
from forgetting.train.l2 import L2Anchor


def _tiny_model(seed=0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32))


def _perturb(model, seed=1, scale=0.01) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    deltas = {}
    with torch.no_grad():
        for name, p in model.named_parameters():
            deltas[name] = torch.randn(p.shape, generator=g) * scale
            p.add_(deltas[name])
    return deltas


def _touch_every_parameter(model):
    """A zero-valued loss whose backward reaches every parameter (so every grad hook fires, adding nothing)."""
    return sum((p * 0).sum() for p in model.parameters())


def test_penalty_is_zero_at_init_and_lambda_times_squared_distance_after():
    model = _tiny_model()
    lam = 0.3
    anchor = L2Anchor(model, lam)
    assert anchor.penalty() == 0.0
    assert set(anchor.anchors) == {n for n, _ in model.named_parameters()}  # every trainable tensor is anchored
    deltas = _perturb(model)
    expected = lam * sum(float(d.pow(2).sum()) for d in deltas.values())
    assert anchor.penalty() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("accum", [1, 4])
def test_gradient_is_two_lambda_times_the_displacement(accum):
    model = _tiny_model()
    lam = 0.25
    anchors = {n: p.detach().clone() for n, p in model.named_parameters()}
    anchor = L2Anchor(model, lam, accum_steps=accum)
    _perturb(model)
    assert anchor.penalty() > 0
    params = dict(model.named_parameters())

    model.zero_grad(set_to_none=True)
    _touch_every_parameter(model).backward()
    for name, p in params.items():
        assert p.grad is not None, name
        expected = 2 * lam * (p.detach() - anchors[name]) / accum
        assert expected.abs().max() > 0  # the check below is not vacuous
        assert torch.allclose(p.grad, expected, rtol=1e-6, atol=1e-10), name

    # over one accumulated optimizer step (accum micro-batch backwards) the grads add up to 2λ(θ − θ*) exactly once
    model.zero_grad(set_to_none=False)
    for _ in range(accum):
        _touch_every_parameter(model).backward()
    for name, p in params.items():
        assert torch.allclose(p.grad, 2 * lam * (p.detach() - anchors[name]), rtol=1e-5, atol=1e-10), name

    # on a real loss the hook adds to the loss gradient: compare with a twin model that has no anchor
    twin = _tiny_model()
    _perturb(twin)
    ids = torch.arange(8).unsqueeze(0)
    model.zero_grad(set_to_none=True)
    model(input_ids=ids, labels=ids).loss.backward()
    twin(input_ids=ids, labels=ids).loss.backward()
    for (name, p), q in zip(params.items(), twin.parameters()):
        assert torch.equal(p.detach(), q.detach())
        expected = q.grad + 2 * lam * (p.detach() - anchors[name]) / accum
        assert torch.allclose(p.grad, expected, rtol=1e-5, atol=1e-8), name


def test_removed_anchor_adds_nothing():
    model = _tiny_model()
    anchor = L2Anchor(model, 1.0)
    _perturb(model)
    anchor.remove()
    model.zero_grad(set_to_none=True)
    _touch_every_parameter(model).backward()
    assert all(torch.equal(p.grad, torch.zeros_like(p)) for p in model.parameters())


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
