"""Robustness to weight perturbation (paper 003 §3.4, App. C.3): how much the held-out pretraining loss rises when
the weights are perturbed, in place and restored exactly afterwards.

    python launch.py method=base eval.robust_noise=[0.009,0.017,0.025,0.05] eval.robust_nf4=true

- **Gaussian noise per weight matrix**: every parameter with ≥ 2 dimensions (the linear layers and the embedding,
  counted once when tied), W ← W + γ‖W‖_F·Z/‖Z‖_F with Z ~ N(0, I), one generator per noise seed. Biases and
  norm gains are left alone (the paper does not say which tensors it perturbs).
- **NF4**: every ``nn.Linear`` except the output head (as transformers leaves ``lm_head`` unquantized) goes through
  bitsandbytes' 4-bit NF4 quantize-dequantize with blocksize 64 and double quantization — what
  ``bnb.nn.Linear4bit(quant_type="nf4")`` computes with (tests/evaluate/test_robust.py checks it output for output).

    pytest tests/evaluate/test_robust.py
"""
from __future__ import annotations

import contextlib
from typing import Callable

import torch


def weight_matrices(model) -> list[tuple[str, torch.nn.Parameter]]:
    return [(n, p) for n, p in model.named_parameters() if p.dim() >= 2]


@torch.no_grad()
def add_noise_(params: list[torch.Tensor], gamma: float, seed: int) -> None:
    """W ← W + γ‖W‖_F·Z/‖Z‖_F per tensor (computed in fp32, cast back)."""
    gen = torch.Generator().manual_seed(seed)
    for p in params:
        w = p.float()
        z = torch.randn(w.shape, generator=gen, dtype=torch.float32).to(w.device)
        p.copy_((w + gamma * torch.linalg.vector_norm(w) * z / torch.linalg.vector_norm(z)).to(p.dtype))


def nf4_roundtrip(w: torch.Tensor) -> torch.Tensor:
    """NF4 quantize-dequantize (blocksize 64, double quantization), as ``Linear4bit`` stores and computes with it."""
    from bitsandbytes.functional import dequantize_4bit, quantize_4bit

    q, state = quantize_4bit(w.detach().float().contiguous(), blocksize=64, quant_type="nf4",
                             compress_statistics=True)
    return dequantize_4bit(q, state).to(w.dtype)


def nf4_linears(model) -> list[torch.nn.Parameter]:
    head = model.get_output_embeddings()
    return [m.weight for m in model.modules() if isinstance(m, torch.nn.Linear) and m is not head]


@contextlib.contextmanager
def perturbed(params: list[torch.Tensor], change: Callable[[list[torch.Tensor]], None]):
    """The weights changed by ``change`` inside the block, and bit for bit their old values after it."""
    saved = [p.detach().clone() for p in params]
    try:
        with torch.no_grad():
            change(params)
        yield
    finally:
        with torch.no_grad():
            for p, s in zip(params, saved):
                p.copy_(s)


def robustness(model, loss: Callable[[], float], gammas: list[float], seeds: int, nf4: bool) -> dict[str, float]:
    """``robust/noise_<γ>/increase`` (mean over ``seeds`` noise draws) and ``robust/nf4/increase``: the rise of
    ``loss()`` over the unperturbed model's; ``robust/clean/loss`` is that baseline."""
    clean = loss()
    out = {"robust/clean/loss": clean}
    matrices = [p for _, p in weight_matrices(model)]
    for gamma in gammas:
        rises = []
        for seed in range(seeds):
            with perturbed(matrices, lambda ps: add_noise_(ps, gamma, seed)):
                rises.append(loss() - clean)
        out[f"robust/noise_{gamma:g}/increase"] = sum(rises) / len(rises)
    if nf4:
        linears = nf4_linears(model)
        with perturbed(linears, lambda ps: [p.copy_(nf4_roundtrip(p)) for p in ps]):
            out["robust/nf4/increase"] = loss() - clean
    return out
