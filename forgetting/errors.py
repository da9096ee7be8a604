"""The project's error for input that composes but makes no sense, and the one-line checks that raise it: the
lowest layer, imported by every other (``forgetting.config`` and everything above it).

    python launch.py method.ratio=-1      # error: method.ratio=-1 is invalid: expected a number >= 0
"""
from __future__ import annotations

import glob
import os
from typing import Any, Optional


class ConfigError(ValueError):
    """A config value that composes but makes no sense (negative ratio, temperature <= 0, ...)."""


def check(ok: bool, key: str, value: Any, expected: str) -> None:
    """Raise ConfigError naming ``key=value`` and what was ``expected`` unless ``ok``."""
    if not ok:
        raise ConfigError(f"{key}={value!r} is invalid: expected {expected}")


def check_local(key: str, path: Optional[str]) -> None:
    """A path that is plainly local (absolute, ./, ../, ~) must exist before hours of work start; anything else
    may be a hub id and is checked when it is loaded."""
    if path and path.startswith(("/", "./", "../", "~")):
        expanded = os.path.expanduser(path)
        check(bool(glob.glob(expanded)) or os.path.exists(expanded), key, path, "an existing local path")
