"""What the trainer lets a method change in its update (forgetting/train/fit.py): a hook's four entry points. A
method's trainer parts (``forgetting.parts.base.TrainHook``) are hooks, and so is SAM's step in the base builder's
segments (forgetting/train/sam.py). All run in every training process (hooks are pickled to DeepSpeed's workers).
"""
from __future__ import annotations

from typing import ClassVar


class Hook:
    """``optimizer`` wraps the optimizer class HF's Trainer chose, ``training_step`` wraps one micro-batch's forward
    and backward (e.g. a second pass at perturbed weights), ``gradient`` adds to the step's complete gradient once,
    ``log`` adds to the logged values."""

    hf_optim: ClassVar[str | None] = None  # an optimizer: the HF Trainer's ``optim`` name

    def optimizer(self, cls: type, kwargs: dict) -> tuple[type, dict]:
        return cls, kwargs

    def training_step(self, trainer, step, model, inputs, num_items_in_batch=None):
        """``step(model, inputs, num_items_in_batch)`` is the step without this hook; returns the detached loss."""
        return step(model, inputs, num_items_in_batch)

    def gradient(self, trainer, model) -> None:
        """Add to the step's gradient once per optimizer step, when it is complete — after every micro-batch and
        every pass over them (SAM's second one included) — and before clipping: the gradient of a term of the loss
        that does not depend on the batch (EWC's penalty)."""

    def log(self, trainer, logs: dict) -> None:
        pass
