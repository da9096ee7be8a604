"""ℓ2 to the initial weights, λ‖θ − θ*‖² (paper §2 (1); Kumar et al. 2023), applied by the optimizer
(``forgetting.train.l2``), so it is the same in one process and under DeepSpeed ZeRO-3.

    python launch.py method=l2 method.l2_lambda=1e-3
"""
from __future__ import annotations

from dataclasses import dataclass

from forgetting.parts.base import Regularizer, check_knob, register
from forgetting.train.l2 import l2_penalty, with_l2


@dataclass
class L2Knobs:
    l2_lambda: float = 1e-3  # paper §3.1 (Table 10: 1e-3 best of 1e-1/1e-2/1e-3)

    def __post_init__(self) -> None:
        check_knob(self.l2_lambda >= 0, "l2_lambda", self.l2_lambda, "a number >= 0")


@register
class L2(Regularizer):
    name = "l2"
    Knobs = L2Knobs
    label = "ℓ2"

    def optimizer(self, cls: type, kwargs: dict) -> tuple[type, dict]:
        if self.knobs.l2_lambda <= 0:
            return cls, kwargs

        return with_l2(cls), {**kwargs, "l2_lambda": self.knobs.l2_lambda}

    def log(self, trainer, logs: dict) -> None:
        if self.knobs.l2_lambda <= 0 or "loss" not in logs or trainer.optimizer is None:
            return

        # under ZeRO each rank's optimizer holds a disjoint shard of the weights: sum over the ranks
        sharded = trainer.is_deepspeed_enabled and trainer.accelerator.state.deepspeed_plugin.zero_stage > 0
        logs["l2"] = l2_penalty(trainer.optimizer, sharded)
