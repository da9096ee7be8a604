"""Directional sharpness along the fine-tuning direction (paper 003 §2.2, §4): Δ = θ_ft − θ_base, the curvature
κ = ΔᵀHΔ/‖Δ‖² of the pretraining loss at the base (H by a Hessian-vector product: two backward passes, no Hessian),
and two predictions of the loss change beside the change observed: the paper's Eq. 6, ½ΔᵀHΔ (which assumes the base
sits at a minimum, ∇L = 0), and the second-order Taylor expansion ∇L·Δ + ½ΔᵀHΔ (which does not).

    python launch.py method=ft eval.sharpness=true
    # sharp/direction/{curvature,predicted_eq6,predicted_taylor,observed,norm}

Memory: the base, the tuned weights and a second-order graph of the loss (≈ 3–4× a training step's activations);
meant for the toy and small models.

    pytest tests/evaluate/test_sharpness.py
"""
from __future__ import annotations

from typing import Callable

import torch


def directional(base_model, tuned: dict[str, torch.Tensor], loss_of: Callable[[torch.nn.Module], torch.Tensor]
                ) -> dict[str, float]:
    """The metrics for Δ = tuned − base's parameters (by name), with ``loss_of(model)`` the pretraining loss (a
    differentiable scalar)."""
    if hasattr(base_model, "set_attn_implementation"):  # SDPA's CPU kernels have no second derivative
        base_model.set_attn_implementation("eager")
    params = [(n, p) for n, p in base_model.named_parameters() if n in tuned]
    delta = [tuned[n].to(p.device, p.dtype) - p.detach() for n, p in params]  # the base loads in fp32 (or wider)
    base_model.eval()
    loss = loss_of(base_model)
    grads = torch.autograd.grad(loss, [p for _, p in params], create_graph=True)
    g_dot_d = sum((g * d).sum() for g, d in zip(grads, delta))
    hvp = torch.autograd.grad(g_dot_d, [p for _, p in params])
    dhd = float(sum((h * d).sum() for h, d in zip(hvp, delta)))
    norm2 = float(sum(d.double().pow(2).sum() for d in delta))
    with torch.no_grad():
        before = float(loss)
        saved = [p.detach().clone() for _, p in params]
        for (_, p), d in zip(params, delta):
            p.add_(d)
        after = float(loss_of(base_model))
        for (_, p), s in zip(params, saved):
            p.copy_(s)
    return {"sharp/direction/curvature": dhd / norm2 if norm2 > 0 else 0.0,
            "sharp/direction/predicted_eq6": 0.5 * dhd,  # paper 003 Eq. 6: the rise is ½ΔᵀHΔ (no gradient term)
            "sharp/direction/predicted_taylor": float(g_dot_d.detach()) + 0.5 * dhd,  # with the first-order term
            "sharp/direction/observed": after - before,
            "sharp/direction/norm": norm2 ** 0.5}
