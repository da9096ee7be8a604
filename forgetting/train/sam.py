"""Sharpness-aware minimization's update (Foret et al. 2021; paper 003 §2.3.1, App. A.1.2) as a trainer hook over
AdamW: ε = ρ·g/‖g‖ with one norm over every trained parameter, the gradient taken again at θ + ε, the weights restored
exactly, and AdamW stepping with that second gradient. The method part (``method.optimizer=sam``,
forgetting/parts/sam.py) and the base builder's segments (``model.pretrain.rho``, forgetting/train/pretrain.py) both
run this hook.

It is SAM over the **effective** batch: under gradient accumulation both passes run over every micro-batch of the
step (the first pass is the trainer's own; on the step's last micro-batch, once the accumulated gradient is
complete — and, with several processes, averaged — the hook perturbs, replays the step's micro-batches, and
restores). The trainer's clipping, schedule and the ℓ2 anchor then act on the SAM gradient, as they would on a
plain one; the hook keeps no state across steps, so a checkpoint and its resume are the base optimizer's. One step
costs two forward-backward passes. ``rho: 0`` is AdamW exactly. DeepSpeed is refused: ZeRO partitions gradients
and steps inside its engine, where this hook cannot reach.

    pytest tests/train/test_sam.py
"""
from __future__ import annotations

import contextlib

import torch

from forgetting.train.hooks import Hook


@torch.no_grad()
def perturb(params: list[torch.Tensor], rho: float) -> list[torch.Tensor]:
    """θ ← θ + ρ·g/‖g‖ (one norm over all ``params``' gradients); returns the original weights, to restore exactly."""
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad.float()) for p in params]))
    scale = rho / (norm + 1e-12)
    saved = [p.detach().clone() for p in params]
    for p in params:
        p.add_((p.grad.float() * scale).to(p.dtype))
    return saved


@torch.no_grad()
def restore(params: list[torch.Tensor], saved: list[torch.Tensor]) -> None:
    for p, s in zip(params, saved):
        p.copy_(s)


class SamStep(Hook):
    """The trainer hook (``training_step``) of SAM with radius ``rho``."""

    def __init__(self, rho: float):
        self.rho = rho
        self._batches: list[dict] = []  # the current step's micro-batches, replayed at θ + ε

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_batches": []}

    def training_step(self, trainer, step, model, inputs, num_items_in_batch=None):
        if self.rho <= 0:
            return step(model, inputs, num_items_in_batch)
        if trainer.is_deepspeed_enabled:  # a caller that skipped the config check
            raise RuntimeError("SAM does not run under DeepSpeed: train without trainer.deepspeed")
        self._batches.append(dict(inputs))
        loss = step(model, inputs, num_items_in_batch)  # the first pass: the gradient at θ, accumulated
        if not trainer.accelerator.sync_gradients:
            return loss
        batches, self._batches = self._batches, []
        params = [p for p in model.parameters() if p.requires_grad and p.grad is not None]
        saved = perturb(params, self.rho)
        model.zero_grad(set_to_none=False)
        for i, batch in enumerate(batches):  # the second pass: the gradient at θ + ε over the same micro-batches
            last = i == len(batches) - 1
            sync = contextlib.nullcontext() if last or trainer.accelerator.num_processes == 1 else \
                trainer.accelerator.no_sync(model)
            with sync:
                step(model, batch, num_items_in_batch)
        restore(params, saved)
        return loss  # the loss at θ, as the trainer logs it for any optimizer
