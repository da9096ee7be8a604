"""The learning–forgetting frontier across bases (forgetting/frontier.py) on hand-made points: the Pareto front,
τ, the loss-matched held-out loss, forgetting and % less forgetting, computed by hand below."""
from __future__ import annotations

import json

import pytest

from forgetting.frontier import loss_matched, pareto_lower, points, x_metric
from forgetting.report import write_report

X = "down/arith/loss"


def _run(base, label, x, y, method="ft", seed=0):
    m = {"pre/heldout/loss": y} if x is None else {X: x, "pre/heldout/loss": y}
    return {"label": label, "method": method, "seed": seed, "base_label": base, "metrics": m}


RUNS = [
    _run("default", "Base", None, 1.0, method="base"),
    _run("default", "FT (lr=1e-4)", 0.9, 1.1),
    _run("default", "FT (lr=1e-3)", 0.5, 1.6),
    _run("default", "FT (lr=1e-2)", 0.3, 2.0),
    _run("default", "FT (lr=3e-2)", 0.35, 2.5),  # dominated by lr=1e-2
    _run("pretrain=sam", "Base", None, 1.05, method="base"),
    _run("pretrain=sam", "FT (lr=1e-4)", 1.0, 1.07),
    _run("pretrain=sam", "FT (lr=1e-3)", 0.45, 1.2),  # two seeds: means (0.45, 1.2)
    _run("pretrain=sam", "FT (lr=1e-3)", 0.45, 1.2, seed=1),
    _run("pretrain=sam", "FT (lr=1e-2)", 0.4, 1.3),
]


def test_pareto_front_lower_is_better():
    pts = points(RUNS, X)["default"]["runs"]
    assert pareto_lower(pts) == ["FT (lr=1e-2)", "FT (lr=1e-3)", "FT (lr=1e-4)"]


def test_loss_matched_table_gives_the_hand_computed_answer():
    assert x_metric(RUNS) == X
    table = loss_matched(points(RUNS, X))
    # best downstream losses: default 0.3, sam 0.4 → τ = 0.4
    assert table["tau"] == 0.4 and table["reference"] == "default"
    d, s = table["rows"]["default"], table["rows"]["pretrain=sam"]
    # default: runs with x ≤ 0.4 are lr=1e-2 (2.0) and lr=3e-2 (2.5) → 2.0, forgetting 2.0 − 1.0 = 1.0
    assert d["y_at_tau"] == 2.0 and d["forgetting"] == pytest.approx(1.0)
    # sam: only lr=1e-2 reaches 0.4 → 1.3, forgetting 1.3 − 1.05 = 0.25 → 75% less than default's 1.0
    assert s["y_at_tau"] == 1.3 and s["forgetting"] == pytest.approx(0.25)
    assert s["less_forgetting_pct"] == pytest.approx(75.0) and d["less_forgetting_pct"] == pytest.approx(0.0)


def test_the_report_carries_the_section_and_the_plot(tmp_path):
    for i, r in enumerate(RUNS):
        (tmp_path / str(i)).mkdir()
        (tmp_path / str(i) / "results.json").write_text(json.dumps(r))
    md = write_report([tmp_path])
    assert "## Learning–forgetting across bases" in md
    assert "| pretrain=sam | 0.400 | 1.050 | 1.300 | +0.250 | 75% |" in md
    assert (tmp_path / "lf_frontier.png").stat().st_size > 1000


def test_robustness_and_curve_columns_are_lower_is_better_and_never_percentages():
    from forgetting.report import aggregate, is_percent, lower_is_better

    for m in ("robust/noise_0.2/increase", "robust/nf4/increase", "curve/10/down_loss", "sharp/direction/curvature"):
        assert lower_is_better(m), m
    rows = aggregate([{"label": "Base", "metrics": {"robust/noise_0.2/increase": 0.0177}}])
    assert not is_percent(rows, "robust/noise_0.2/increase")


def test_with_several_seeds_each_seed_is_compared_at_its_own_tau():
    from forgetting.frontier import per_seed, seeds_markdown

    seed1 = [_run("default", "Base", None, 1.0, method="base", seed=1),
             _run("default", "FT (lr=1e-3)", 0.5, 1.5, seed=1),
             _run("pretrain=sam", "Base", None, 1.0, method="base", seed=1),
             _run("pretrain=sam", "FT (lr=1e-3)", 0.5, 1.25, seed=1)]
    runs = [r for r in RUNS if r["seed"] == 0] + seed1
    tables = per_seed(runs, X, "default")
    # seed 0: τ 0.4, sam 75% less (as above); seed 1: τ 0.5, forgetting 0.5 vs 0.25 → 50% less
    assert [t["tau"] for t in tables.values()] == [0.4, 0.5]
    assert tables[1]["rows"]["pretrain=sam"]["less_forgetting_pct"] == pytest.approx(50.0)
    md = seeds_markdown(tables, ["default", "pretrain=sam"])
    assert "| pretrain=sam | 75% | 50% | 62% ± 18 |" in md and "seed 1 (τ 0.500)" in md
    assert per_seed(RUNS, X, "default") == {}  # seed 1 there has no base model nor reference: left out


def test_another_method_on_a_base_is_a_curve_of_its_own():
    """EWC runs on the default base are not FT runs of it: their own curve, against the same base model."""
    ewc = [dict(_run("default", "EWC (ewc_lambda=1e4)", 0.4, 1.2), method="ewc")]
    per = points(RUNS + ewc, X)
    assert set(per) == {"default", "pretrain=sam", "default · ewc"}
    assert per["default · ewc"] == {"runs": {"EWC (ewc_lambda=1e4)": (0.4, 1.2)}, "base": 1.0}
    assert per["default"] == points(RUNS, X)["default"]
