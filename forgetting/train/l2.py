"""ℓ2 to the initial weights: the penalty λ‖θ − θ*‖², applied per parameter as a gradient.

    python launch.py method=l2 method.l2_lambda=1e-3

Each trainable parameter keeps its own anchor θ* beside it, and a post-accumulate-grad hook adds
``2λ(θ − θ*) / accum`` to its gradient on every backward pass: exactly the gradient of the penalty added to each
micro-batch loss, before clipping, without a second copy of the model object. Because the update needs only a
parameter and its own anchor, the same scheme works on a shard of a parameter (ZeRO-3), where a whole-model
penalty term cannot be formed in the forward pass.
"""
from __future__ import annotations

import torch
from transformers import TrainerCallback


class L2Anchor:
    def __init__(self, model: torch.nn.Module, lam: float, accum_steps: int = 1):
        self.lam = lam
        self.accum_steps = accum_steps
        self.anchors: dict[str, torch.Tensor] = {}
        self.params: dict[str, torch.nn.Parameter] = {}
        self.handles = []
        for name, p in model.named_parameters():
            if p.requires_grad:
                self.anchors[name] = p.detach().clone()
                self.params[name] = p
                self.handles.append(p.register_post_accumulate_grad_hook(self._hook(name)))

    def _hook(self, name: str):
        anchor = self.anchors[name]

        def add_penalty_grad(p: torch.Tensor) -> None:
            p.grad.add_(p.detach() - anchor, alpha=2 * self.lam / self.accum_steps)

        return add_penalty_grad

    @torch.no_grad()
    def penalty(self) -> float:
        """λ‖θ − θ*‖² (for logging)."""
        return self.lam * sum(float((self.params[n] - a).pow(2).sum()) for n, a in self.anchors.items())

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()


class L2Logger(TrainerCallback):
    """Adds the current penalty to the trainer's logs as ``l2``."""

    def __init__(self, anchor: L2Anchor):
        self.anchor = anchor

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is not None:
            logs["l2"] = self.anchor.penalty()
