"""AdamW, in 32-bit state (torch) or in 8-bit state (bitsandbytes, paper Appendix B: ``method.optimizer=adamw8bit``).

    python launch.py method=ft method.optimizer=adamw8bit
"""
from __future__ import annotations

from forgetting.parts.base import Optimizer, register


@register
class AdamW(Optimizer):
    name = "adamw"
    hf_optim = "adamw_torch"


@register
class AdamW8bit(Optimizer):
    name = "adamw8bit"
    hf_optim = "adamw_bnb_8bit"
