"""A toy regularizer, written as a user would add one outside the package: this module, its method yaml
(conf/method/shrink.yaml) and its test (tests/test_parts.py) — nothing else.

    FORGETTING_PARTS=shrink PYTHONPATH=tests/parts python launch.py debug=micro method=shrink \
        'hydra.searchpath=[file://tests/parts/conf]'

After every optimizer step it pulls each weight towards zero by ``lr * shrink`` of itself.
"""
from __future__ import annotations

from dataclasses import dataclass

from forgetting.parts.base import Regularizer, check_knob, register


@dataclass
class ShrinkKnobs:
    shrink: float = 0.1

    def __post_init__(self) -> None:
        check_knob(self.shrink >= 0, "shrink", self.shrink, "a number >= 0")


@register
class Shrink(Regularizer):
    name = "shrink"
    Knobs = ShrinkKnobs
    label = "Shrink"

    def optimizer(self, cls: type, kwargs: dict) -> tuple[type, dict]:
        import torch

        shrink = self.knobs.shrink

        class Shrinking(cls):
            @torch.no_grad()
            def step(self, closure=None):
                loss = super().step(closure)
                for group in self.param_groups:
                    for p in group["params"]:
                        p.mul_(1 - group["lr"] * shrink)
                return loss

        return Shrinking, kwargs

    def log(self, trainer, logs: dict) -> None:
        if "loss" in logs:
            logs["shrink"] = self.knobs.shrink
