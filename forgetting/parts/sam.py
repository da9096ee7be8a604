"""Sharpness-aware minimization as a method part (``method.optimizer=sam``): the update itself, SAM over the
effective batch, is forgetting/train/sam.py's trainer hook, which the base builder's SAM segments run too.

    python launch.py method=ft method.optimizer=sam method.rho=0.05
    python launch.py method=base model.pretrain.rho=0.05      # a SAM-pretrained toy base (forgetting/train/pretrain.py)

    pytest tests/train/test_sam.py
"""
from __future__ import annotations

from dataclasses import dataclass

from forgetting.errors import ConfigError
from forgetting.parts.base import Optimizer, check_knob, register
from forgetting.train.sam import SamStep


@dataclass
class SamKnobs:
    rho: float = 0.05  # paper 003 §3.1: ρ 0.05 from small-scale tuning

    def __post_init__(self) -> None:
        check_knob(self.rho >= 0, "rho", self.rho, "a number >= 0 (0: plain AdamW)")


@register
class SAM(Optimizer):
    name = "sam"
    hf_optim = "adamw_torch"  # the paper's base optimizer
    Knobs = SamKnobs
    label = "SAM"

    def __init__(self, knobs=None):
        super().__init__(knobs)
        self.step = SamStep(self.knobs.rho)

    def check(self, config) -> None:
        if self.knobs.rho > 0 and config.trainer.deepspeed:
            raise ConfigError(f"method.optimizer=sam is invalid with trainer={config.trainer.name} (DeepSpeed): "
                              "expected a trainer without DeepSpeed (ZeRO steps inside its engine, where SAM's "
                              "second pass cannot reach)")

    def training_step(self, trainer, step, model, inputs, num_items_in_batch=None):
        return self.step.training_step(trainer, step, model, inputs, num_items_in_batch)
