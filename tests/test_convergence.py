"""Report sections of paper 004 (forgetting/convergence.py) on hand-made runs: the speed-up of a recycled start and
the source × target table of recycled models."""
from __future__ import annotations

import json

import pytest

from forgetting.convergence import pivot, source_of, speedups
from forgetting.report import write_report


def _run(label, method, base, curve=None, source=None, em=None):
    metrics = {f"curve/{s}/down_loss": v for s, v in (curve or {}).items()}
    if em is not None:
        metrics["down/arith/exact_match"] = em
    overrides = [f"method.recycle_from={source}"] if source else []
    return {"label": label, "method": method, "base_label": base, "metrics": metrics, "overrides": overrides, "seed": 0}


RUNS = [
    _run("FT", "ft", "v3", {10: 2.0, 20: 1.2, 30: 0.9, 40: 0.8}),
    _run("Recycle (v2)", "recycle", "v3", {10: 0.85, 20: 0.75, 30: 0.7, 40: 0.7}, source="[v2]"),
    _run("Recycle (v1)", "recycle", "v3", {10: 1.5, 20: 0.95, 30: 0.8, 40: 0.78}, source="[v1]"),
    _run("Recycle (slow)", "recycle", "v3", {10: 3.0, 20: 2.0, 30: 1.0, 40: 0.9}, source="[v0]"),
    _run("Recycle", "recycle", "v3", source="[v2]", em=0.6),
    _run("Recycle", "recycle", "v3", source="[v1]", em=0.4),
    _run("Recycle", "recycle", "v2", source="[v1]", em=0.5),
]


def test_speedup_is_ft_steps_to_its_final_loss_over_the_recycled_runs():
    ups = {u["run"]: u for u in speedups(RUNS)}
    # FT reaches its final 0.8 at step 40; recycled from v2 at step 10 (0.85 > 0.8? no: 10 → 0.85, 20 → 0.75)
    assert ups["Recycle (v2)"]["ft_steps"] == 40 and ups["Recycle (v2)"]["steps"] == 20
    assert ups["Recycle (v2)"]["speedup"] == pytest.approx(2.0)
    assert ups["Recycle (v1)"]["steps"] == 30 and ups["Recycle (v1)"]["speedup"] == pytest.approx(40 / 30)
    assert ups["Recycle (slow)"]["steps"] is None and ups["Recycle (slow)"]["speedup"] is None


def test_pivot_of_recycled_models_without_fine_tuning():
    assert source_of(RUNS[1]) == "[v2]"
    rows, cols, cells = pivot(RUNS, "down/arith/exact_match")
    assert rows == ["[v2]", "[v1]"] and cols == ["v3", "v2"]
    assert cells == {("[v2]", "v3"): 0.6, ("[v1]", "v3"): 0.4, ("[v1]", "v2"): 0.5}


def test_the_report_carries_both_sections(tmp_path):
    for i, r in enumerate(RUNS):
        (tmp_path / str(i)).mkdir()
        (tmp_path / str(i) / "results.json").write_text(json.dumps(r))
    md = write_report([tmp_path])
    assert "| [v1] | 40.0 | 50.0 |" in md and "| v3 | Recycle (v2) | 0 | 40 | 20 | 2.00× |" in md
    assert (tmp_path / "convergence.png").stat().st_size > 1000


def test_the_ft_reference_is_the_run_with_the_same_seed_and_lr():
    def run(label, method, seed, lr, pts):
        r = _run(label, method, "v3", pts)
        r["seed"], r["overrides"] = seed, [f"method={method}", f"trainer.lr={lr}", f"seed={seed}"]
        return r

    runs = [run("FT", "ft", 0, "1e-3", {10: 1.0, 20: 0.5}), run("FT", "ft", 0, "3e-3", {10: 0.4, 20: 0.3}),
            run("FT", "ft", 1, "1e-3", {10: 2.0, 20: 1.5}),
            run("R", "recycle", 0, "1e-3", {10: 0.5, 20: 0.45}), run("R", "recycle", 1, "1e-3", {10: 0.6, 20: 0.5}),
            run("R", "recycle", 0, "1e-2", {10: 0.1, 20: 0.1})]  # no FT at this lr: no speed-up
    ups = speedups(runs)
    assert [(u["seed"], u["ft_steps"], u["steps"]) for u in ups] == [(0, 20, 10), (1, 20, 10)]
    # had the first FT run been the reference for all, seed 1 would have reached FT's 0.5 only at step 20
