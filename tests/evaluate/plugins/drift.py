"""A toy evaluator, written as a user would add one outside the package: this module and its test
(tests/evaluate/test_plugin.py) — nothing else.

    FORGETTING_PLUGINS=drift PYTHONPATH=tests/evaluate/plugins python launch.py debug=micro eval.drift=true

It reports how far fine-tuning moved the weights: ‖θ − θ_base‖ / ‖θ_base‖ over every parameter, as
``pre/weight_drift/relative``, declared lower-is-better (a name the report could not have guessed it from).
"""
from __future__ import annotations

from dataclasses import dataclass

from forgetting.errors import check
from forgetting.evaluate.evaluators import Evaluator, Metric, register
from forgetting.runtime import load


@dataclass
class DriftKnobs:
    drift: bool = False  # eval.drift=true turns it on
    drift_min_norm: float = 0.0  # parameters with a base norm at most this are left out

    def __post_init__(self) -> None:
        check(self.drift_min_norm >= 0, "eval.drift_min_norm", self.drift_min_norm, "a number >= 0")


@register
class Drift(Evaluator):
    name = "drift"
    Knobs = DriftKnobs
    metrics = (Metric("pre/weight_drift/*", higher_is_better=False),)

    def active(self, ev):
        return self.knobs(ev).drift and ev.base is not None and ev.model_art != ev.base

    def spec(self, ev):
        return {"base": ev.base, "min_norm": self.knobs(ev).drift_min_norm}

    def run(self, ev):
        base, _ = load(ev.c, ev.base)
        tuned = dict(ev.model.named_parameters())
        moved = total = 0.0
        for name, p in base.named_parameters():
            if float(p.norm()) > self.knobs(ev).drift_min_norm:
                moved += float((tuned[name].detach().float() - p.detach().float()).pow(2).sum())
                total += float(p.detach().float().pow(2).sum())
        return {"pre/weight_drift/relative": (moved / total) ** 0.5}
