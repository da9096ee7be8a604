"""Every float knob of the schema states a finite range: inf and nan are refused naming the key and the range.

    pytest tests/test_finite.py

The schema is walked (every group, every part's knobs), so a float knob added without a check of its own fails here:
the generic rule (forgetting.compose._check_finite) still refuses inf, but only as "a finite number", with no range.
"""
from __future__ import annotations

import dataclasses
import typing

import pytest
from conftest import compose

from forgetting.compose import Config
from forgetting.config import BenchmarkConfig, StartToken
from forgetting.errors import ConfigError


def float_knobs(cls=Config, prefix: str = "") -> list[tuple[str, bool]]:
    """(key, is a list) of every float field below ``cls``; fields in lists of dataclasses are left out (below)."""
    out = []
    for f in dataclasses.fields(cls):
        t = typing.get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(t):
            out += float_knobs(t, f"{prefix}{f.name}.")
        elif t is float or t == typing.Optional[float] or t == list[float]:
            out.append((f"{prefix}{f.name}", t == list[float]))
    return out


KNOBS = float_knobs()


def test_the_walk_finds_the_knobs():
    keys = dict(KNOBS)
    assert {"generator.temperature", "trainer.lr", "method.ratio", "method.alpha", "model.pretrain.rho",
            "eval.robust_noise", "plan.mfu", "model.midtrain.mix"} <= set(keys) and len(keys) > 30


@pytest.mark.parametrize("key,is_list", KNOBS, ids=[k for k, _ in KNOBS])
def test_inf_and_nan_are_refused_with_the_knobs_range(key, is_list):
    for bad in ("inf", "-inf", "nan"):
        override = f"{key}=[{bad}]" if is_list else f"{key}={bad}"
        # a mix needs the world's corpus and 4 weights; a knob of the recycle part is checked with any method
        extra = ["model.midtrain.mix=[1,1,1," + bad + "]"] if key == "model.midtrain.mix" else [override]
        with pytest.raises(ConfigError) as err:
            compose(*extra)
        message = str(err.value)
        assert message.startswith(f"{key}=") and bad in message and "\n" not in message, message
        assert not message.endswith("expected a finite number"), f"{key} states no range of its own: {message}"


@pytest.mark.parametrize("cls,key", [(StartToken, "weight"), (BenchmarkConfig, "temperature"),
                                     (BenchmarkConfig, "top_p")])
def test_knobs_in_lists_refuse_inf(cls, key):
    with pytest.raises(ConfigError, match=rf"{key}=inf is invalid: expected .*(> 0|\(0, 1\])"):
        cls(**{"name": "b"} if cls is BenchmarkConfig else {}, **{key: float("inf")})


def test_finite_values_still_compose():
    c = compose("generator.temperature=1e6", "trainer.weight_decay=0.1", "eval.robust_noise=[0.01,0.02]")
    assert (c.generator.temperature, c.trainer.weight_decay, c.eval.robust_noise) == (1e6, 0.1, [0.01, 0.02])
