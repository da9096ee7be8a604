"""Wise-FT: θ = α·θ_base + (1 − α)·θ_ft after fine-tuning (paper §2 (4), Table 3, 11; Wortsman et al. 2021).

    python launch.py method=wise_ft method.alpha=0.5
"""
from __future__ import annotations

from dataclasses import dataclass

from forgetting.merge.wise_ft import wise_ft
from forgetting.parts.base import Merge, check_knob, register


@dataclass
class WiseFTKnobs:
    alpha: float = 0.5  # paper Table 3

    def __post_init__(self) -> None:
        check_knob(0.0 <= self.alpha <= 1.0, "alpha", self.alpha, "a number in [0, 1]")


@register
class WiseFT(Merge):
    name = "wise_ft"
    Knobs = WiseFTKnobs
    label = "Wise-FT"

    def merge(self, base_dir, tuned_dir, out_dir) -> None:

        wise_ft(base_dir, tuned_dir, out_dir, self.knobs.alpha)
