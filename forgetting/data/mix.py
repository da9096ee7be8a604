"""Mixing downstream rows with augmentation rows at a ratio, and the step count that mixes do not change.

    pytest tests/data/test_encode.py
"""
from __future__ import annotations

import math


def n_augment(n_downstream: int, ratio: float) -> int:
    """Rows of augmentation data for ``ratio`` (paper Table 4: 10% of MetaMathQA = 40K rows)."""
    return int(round(n_downstream * ratio))


def train_steps(n_downstream: int, epochs: float, effective_batch: int, max_steps: int | None = None) -> int:
    """Gradient steps, from the downstream data alone: a larger mix means fewer epochs, not more steps
    (paper §3, Training Details: "we control for number of gradient steps")."""
    if max_steps is not None:
        return max_steps
    return max(1, math.ceil(epochs * n_downstream / effective_batch))
