"""The parts a method uses when it adds nothing of a kind: training starts from the base, no augmentation, full
fine-tuning, no regularizer, no merge (plain FT, paper §2).

    python launch.py method=ft
"""
from __future__ import annotations

from forgetting.parts.base import Adapter, Augment, Init, Merge, Regularizer, register


@register
class FromBase(Init):
    name = "base"


@register
class NoAugment(Augment):
    name = "none"


@register
class Full(Adapter):
    name = "full"


@register
class NoRegularizer(Regularizer):
    name = "none"


@register
class NoMerge(Merge):
    name = "none"
