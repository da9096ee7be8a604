"""LoRA on every linear layer of the blocks, merged into a full checkpoint after training (paper Table 3, 8;
Biderman et al. 2024). alpha = rank unless set (paper Appendix E.1).

    python launch.py method=lora method.lora_rank=16
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from forgetting.parts.base import Adapter, check_knob, register


@dataclass
class LoraKnobs:
    lora_rank: int = 8
    lora_alpha: Optional[float] = None  # None: alpha = rank (paper Appendix E.1)

    def __post_init__(self) -> None:
        check_knob(self.lora_rank > 0, "lora_rank", self.lora_rank, "a positive integer")
        check_knob(self.lora_alpha is None or self.lora_alpha > 0, "lora_alpha", self.lora_alpha,
                   "a number > 0 or null (alpha = rank)")


@register
class Lora(Adapter):
    name = "lora"
    Knobs = LoraKnobs
    label = "LoRA"
    frozen_base = True  # peft keeps the adapters in fp32 over the frozen base weights

    def wrap(self, model, seed: int):
        import torch

        torch.manual_seed(seed)  # the adapters' random init follows the run's seed, not what ran before
        return with_lora(model, self.knobs.lora_rank, self.knobs.lora_alpha)


def with_lora(model, rank: int, alpha: float | None):
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=rank, lora_alpha=alpha if alpha is not None else rank, target_modules="all-linear",
                        lora_dropout=0.0, task_type="CAUSAL_LM")
    return get_peft_model(model, config)
