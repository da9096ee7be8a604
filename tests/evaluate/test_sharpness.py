"""Directional sharpness (forgetting/evaluate/sharpness.py): ΔᵀHΔ by a Hessian-vector product equals the central
difference of the gradient along Δ, the quadratic prediction matches a quadratic exactly, the base's weights
are left as they were, and the evaluator reports it through launch.py for a trained run."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from conftest import ROOT

from forgetting.evaluate.sharpness import directional


class Quad(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64))


A = torch.tensor([[2.0, 0.3, 0.0], [0.3, 1.0, 0.2], [0.0, 0.2, 4.0]], dtype=torch.float64)
B = torch.tensor([0.1, -0.2, 0.3], dtype=torch.float64)


def quad_loss(m):
    return 0.5 * m.w @ A @ m.w + B @ m.w


def test_on_a_quadratic_curvature_and_prediction_are_exact():
    m = Quad()
    w0 = m.w.detach().clone()
    d = torch.tensor([0.2, 0.1, -0.3], dtype=torch.float64)
    out = directional(m, {"w": w0 + d}, quad_loss)
    assert out["sharp/direction/curvature"] == pytest.approx(float(d @ A @ d / (d @ d)), rel=1e-12)
    assert out["sharp/direction/predicted_taylor"] == pytest.approx(out["sharp/direction/observed"], rel=1e-10)
    # the paper's Eq. 6 leaves out the first-order term: here ∇L·Δ = (Aw + b)·Δ ≠ 0, so it differs by exactly that
    grad_term = float((A @ w0 + B) @ d)
    assert out["sharp/direction/predicted_eq6"] == pytest.approx(0.5 * float(d @ A @ d), rel=1e-12)
    assert out["sharp/direction/predicted_taylor"] - out["sharp/direction/predicted_eq6"] == pytest.approx(grad_term)
    assert torch.equal(m.w.detach(), w0)


def test_on_a_network_the_hvp_matches_a_finite_difference():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=2,
                                         max_position_embeddings=16)).double()
    ids = torch.randint(0, 32, (3, 12), generator=torch.Generator().manual_seed(1))

    def loss_of(m):  # in float64 throughout (HF's own loss casts the logits to float32)
        logits = m(input_ids=ids).logits[:, :-1]
        return torch.nn.functional.cross_entropy(logits.reshape(-1, 32), ids[:, 1:].reshape(-1))

    gen = torch.Generator().manual_seed(2)
    delta = {n: 1e-2 * torch.randn(p.shape, generator=gen, dtype=torch.float64) for n, p in model.named_parameters()}
    tuned = {n: p.detach() + delta[n] for n, p in model.named_parameters()}
    out = directional(model, tuned, loss_of)
    eps = 1e-2

    def grad_dot_delta(scale):  # ∇L(θ + scale·Δ)·Δ; its central difference in scale is ΔᵀHΔ + O(eps²)
        with torch.no_grad():
            for n, p in model.named_parameters():
                p.add_(scale * delta[n])
        params = dict(model.named_parameters())
        grads = torch.autograd.grad(loss_of(model), list(params.values()))
        value = sum(float((g * delta[n]).sum()) for n, g in zip(params, grads))
        with torch.no_grad():
            for n, p in model.named_parameters():
                p.sub_(scale * delta[n])
        return value

    # an independent estimate (the attention's float32 softmax makes second differences of the loss itself noisy)
    dhd = (grad_dot_delta(eps) - grad_dot_delta(-eps)) / (2 * eps)
    norm2 = sum(float(d.pow(2).sum()) for d in delta.values())
    assert out["sharp/direction/curvature"] == pytest.approx(dhd / norm2, rel=1e-2)
    assert out["sharp/direction/norm"] == pytest.approx(norm2 ** 0.5)


def test_the_evaluator_runs_for_a_trained_run(store_copy, tmp_path):
    args = [sys.executable, str(ROOT / "launch.py"), "debug=micro", "method=ft", f"store_dir={store_copy}",
            "eval.tasks=[]", "eval.downstream=[]", "eval.sharpness=true", "eval.sharpness_docs=8",
            f"hydra.run.dir={tmp_path / 'run'}"]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = json.loads((tmp_path / "run" / "results.json").read_text())["metrics"]
    assert m["sharp/direction/norm"] > 0 and "sharp/direction/curvature" in m
    assert m["sharp/direction/observed"] != 0
