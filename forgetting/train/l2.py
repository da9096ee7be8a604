"""ℓ2 to the initial weights, λ‖θ − θ*‖², applied by the optimizer beside each (shard of a) parameter.

    python launch.py method=l2 method.l2_lambda=1e-3
    pytest tests/train/test_l2.py

:func:`with_l2` subclasses the optimizer class the HF Trainer picked (torch AdamW, bitsandbytes AdamW8bit, ...).
Its ``step()`` first adds ``2λ(θ − θ*)`` to the gradient of every parameter that has one, then runs the optimizer's
own step, so the update sees exactly ``∇loss + ∇λ‖θ − θ*‖²``. The anchor θ* is a copy of each parameter taken at its
first step, before any update, and kept in the optimizer's per-parameter state (``state[p]["l2_anchor"]``): it is
saved with every checkpoint and restored on resume, so a resumed run keeps the original anchor instead of
re-anchoring to the checkpoint's weights.

Under DeepSpeed ZeRO the client optimizer is handed this rank's flat fp32 partitions as its parameters, so the same
code keeps one anchor per shard and the training is the same in 1 and N processes.

The penalty gradient is added after gradient clipping (the HF Trainer and DeepSpeed both clip before ``step()``): it
is never clipped. The logged value ``l2`` is λ‖θ − θ*‖² over all parameters (summed over ranks when sharded).
"""
from __future__ import annotations

import torch

ANCHOR = "l2_anchor"


class L2Anchored:
    """Mixin in front of an optimizer class; see :func:`with_l2`."""

    def __init__(self, params, *args, l2_lambda: float, **kwargs):
        if not l2_lambda > 0:
            raise ValueError(f"l2_lambda={l2_lambda!r} is invalid: expected a number > 0")
        super().__init__(params, *args, **kwargs)
        self.l2_lambda = l2_lambda

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:  # the closure recomputes the gradients: the penalty goes on top of those
            with torch.enable_grad():
                loss = closure()
        new = []
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                anchor = self.state.get(p, {}).get(ANCHOR)
                if anchor is None:  # first step of p: θ* = θ, and the penalty gradient is 0
                    new.append((p, p.detach().clone()))
                else:
                    p.grad.add_(p.detach() - anchor, alpha=2 * self.l2_lambda)
        super().step()
        # stored only now: torch's AdamW and bitsandbytes initialise a parameter's state when it is empty
        for p, anchor in new:
            self.state[p][ANCHOR] = anchor
        return loss

    @torch.no_grad()
    def penalty(self) -> float:
        """λ‖θ − θ*‖² over the parameters (or shards) this optimizer holds; 0 before the first step."""
        return self.l2_lambda * sum(float((p.detach().float() - s[ANCHOR].float()).pow(2).sum())
                                    for p, s in self.state.items() if ANCHOR in s)


_CLASSES: dict[type, type] = {}


def with_l2(cls: type) -> type:
    """``cls`` with the ℓ2 anchor in front of its ``step()``; construct it with ``l2_lambda=λ`` added."""
    if issubclass(cls, L2Anchored):
        return cls
    if cls not in _CLASSES:
        # the qualname keeps the base's full name visible: the HF Trainer detects bitsandbytes optimizers by
        # ``"bitsandbytes" in str(optimizer_cls)`` (it then keeps embeddings in 32-bit optimizer state)
        _CLASSES[cls] = type(f"L2{cls.__name__}", (L2Anchored, cls),
                             {"__qualname__": f"L2[{cls.__module__}.{cls.__qualname__}]"})
    return _CLASSES[cls]


def find_l2(optimizer) -> L2Anchored | None:
    """The ℓ2 optimizer inside the wrappers of accelerate and DeepSpeed (each keeps the one it wraps as
    ``.optimizer``), or None."""
    seen = 0
    while optimizer is not None and not isinstance(optimizer, L2Anchored) and seen < 8:
        optimizer, seen = getattr(optimizer, "optimizer", None), seen + 1
    return optimizer if isinstance(optimizer, L2Anchored) else None


def l2_penalty(optimizer, sharded: bool = False) -> float | None:
    """λ‖θ − θ*‖² of the ℓ2 optimizer inside ``optimizer`` (None without one). ``sharded``: each rank holds a
    disjoint part of the parameters (DeepSpeed ZeRO), so the ranks' parts are summed; every rank must call it."""
    opt = find_l2(optimizer)
    if opt is None:
        return None
    value = opt.penalty()
    if sharded and torch.distributed.is_available() and torch.distributed.is_initialized():
        device = (torch.device("cuda", torch.cuda.current_device()) if torch.distributed.get_backend() == "nccl"
                  else torch.device("cpu"))
        total = torch.tensor(value, dtype=torch.float64, device=device)
        torch.distributed.all_reduce(total)
        value = float(total)
    return value
