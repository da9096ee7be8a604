"""The Avg. columns, defined once for every evaluator (paper Tables 2 and 5).

    pytest tests/evaluate/test_lmeval_suite.py

Each evaluator names its top-level columns — lm-eval's tasks and groups (a group such as commonsense counts once,
as the paper's Table 2 Avg.), each generative benchmark's accuracy — and ``{group}/avg`` is their unweighted mean
over everything the suite evaluated, whichever evaluator produced them.
"""
from __future__ import annotations


def average(metrics: dict[str, float], members: dict[str, list[str]]) -> dict[str, float]:
    """``{group}/avg`` per group (``pre``, ``down``): the mean of the member columns, keys of ``metrics``."""
    return {f"{group}/avg": sum(metrics[k] for k in keys) / len(keys) for group, keys in members.items() if keys}
