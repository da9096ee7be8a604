"""The project's error for input that composes but makes no sense, and the one-line checks that raise it: the
lowest layer, imported by every other (``forgetting.config`` and everything above it).

    python launch.py method.ratio=-1      # error: method.ratio=-1 is invalid: expected a number >= 0
"""
from __future__ import annotations

import glob
import math
import os
from typing import Any, Optional


class ConfigError(ValueError):
    """A config value that composes but makes no sense (negative ratio, temperature <= 0, ...)."""


def check(ok: bool, key: str, value: Any, expected: str) -> None:
    """Raise ConfigError naming ``key=value`` and what was ``expected`` unless ``ok``. A float (or a list holding
    one) that is inf or nan is refused whatever ``ok`` says: every number range a check states is a finite one
    (``temperature > 0`` is true of inf)."""
    if not ok or non_finite(value):
        finite = ", finite (not inf or nan)" if non_finite(value) and "finite" not in expected else ""
        raise ConfigError(f"{key}={value!r} is invalid: expected {expected}{finite}")


def non_finite(value: Any) -> bool:
    """Whether ``value`` is, or is a list or tuple holding, a float that is inf or nan."""
    values = value if isinstance(value, (list, tuple)) else [value]
    return any(isinstance(v, float) and not math.isfinite(v) for v in values)


def check_local(key: str, path: Optional[str]) -> None:
    """A path that is plainly local (absolute, ./, ../, ~) must exist before hours of work start; anything else
    may be a hub id and is checked when it is loaded."""
    if path and path.startswith(("/", "./", "../", "~")):
        expanded = os.path.expanduser(path)
        check(bool(glob.glob(expanded)) or os.path.exists(expanded), key, path, "an existing local path")
