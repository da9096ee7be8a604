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


# paper 003's 1B setting by hand (+experiment=olmo2_sam): two mid-trained bases, an lr sweep each; learning = the loss
# on held-out MetaMathQA rows, forgetting = a held-out corpus's loss and the OLMo 2 suite's average (App. B.3)
RHO0 = "model.midtrain.corpus=/data/dolmino.jsonl, model.midtrain.rho=0.0"
RHO5 = "model.midtrain.corpus=/data/dolmino.jsonl, model.midtrain.rho=0.05"
VAL, HELD = "down/metamathqa/val_loss", "pre/dclm_heldout/loss"


def _olmo2(base, label, x, held, avg, method="ft"):
    rho = base.split("rho=")[1].split(",")[0]  # labels name the base, as label_of names a run's model overrides
    label = f"{label} (rho={rho})" if method == "base" else label.replace("(", f"(rho={rho}, ")
    m = {HELD: held, "pre/avg": avg, "pre/gsm8k_cot/exact_match": avg}
    if x is not None:  # a test split's answer loss too: the validation loss is the one the frontier reads
        m.update({VAL: x, "down/metamathqa/loss": 9.0 - x})
    return {"label": label, "method": method, "seed": 0, "base_label": base, "metrics": m}


OLMO2_RUNS = [
    # the bases themselves, their overrides in another order than the fine-tuned runs': one base all the same
    _olmo2("model.midtrain.rho=0.0, model.midtrain.corpus=/data/dolmino.jsonl", "Base", None, 2.00, 0.432, "base"),
    _olmo2("model.midtrain.rho=0.05, model.midtrain.corpus=/data/dolmino.jsonl", "Base", None, 2.02, 0.429, "base"),
    _olmo2(RHO0, "FT (lr=1e-5)", 0.80, 2.05, 0.425), _olmo2(RHO0, "FT (lr=1e-4)", 0.60, 2.20, 0.400),
    _olmo2(RHO0, "FT (lr=2e-4)", 0.50, 2.40, 0.380),
    _olmo2(RHO5, "FT (lr=1e-5)", 0.85, 2.04, 0.427), _olmo2(RHO5, "FT (lr=1e-4)", 0.62, 2.10, 0.418),
    _olmo2(RHO5, "FT (lr=2e-4)", 0.55, 2.24, 0.405),
]


def test_the_1b_report_compares_the_bases_at_a_matched_fine_tuning_loss_on_every_forgetting_axis(tmp_path):
    """τ = 0.55 (the SAM base's best validation loss, the larger best); at τ the AdamW base keeps only its lr=2e-4 run
    and SAM its lr=2e-4 run. Held-out loss: rises of 0.40 and 0.22 → 45% less. Suite average: drops of 5.2 and 2.4
    points from each base's own → 54% less; from the AdamW base's 43.2 (paper 003 §3.5.1) 5.2 and 2.7 → 48% less."""
    from forgetting.frontier import loss_matched, y_axes

    assert x_metric(OLMO2_RUNS) == VAL and y_axes(OLMO2_RUNS) == [HELD, "pre/avg"]
    held = loss_matched(points(OLMO2_RUNS, VAL, HELD), "model.midtrain.rho=0.0")
    assert (held["tau"], held["tau_from"], held["reference"]) == (0.55, RHO5, RHO0)
    assert held["rows"][RHO5]["forgetting"] == pytest.approx(0.22)
    assert held["rows"][RHO5]["less_forgetting_pct"] == pytest.approx(45.0)
    avg = loss_matched(points(OLMO2_RUNS, VAL, "pre/avg"), "model.midtrain.rho=0.0", higher=True)
    assert avg["rows"][RHO0]["y_at_tau"] == 0.380 and avg["rows"][RHO5]["y_at_tau"] == 0.405  # the highest at τ
    assert avg["rows"][RHO5]["forgetting"] == pytest.approx(0.024)
    assert avg["rows"][RHO5]["less_forgetting_pct"] == pytest.approx(100 * (1 - 0.024 / 0.052))
    assert avg["rows"][RHO5]["from_reference"] == pytest.approx(0.027)

    for i, r in enumerate(OLMO2_RUNS):
        (tmp_path / str(i)).mkdir()
        (tmp_path / str(i) / "results.json").write_text(json.dumps(r))
    md = write_report([tmp_path], reference_base="model.midtrain.rho=0.0")
    assert (f"τ = 0.550: the largest of the bases' best downstream losses (`{RHO0}`: 0.500; `{RHO5}`: 0.550), set "
            f"by `{RHO5}`") in md
    assert f"reference base `{RHO0}` (--reference-base)" in md and f"x = `{VAL}`" in md
    assert "### Forgetting as `pre/dclm_heldout/loss` (lower is better)" in md
    assert f"| {RHO5} | 0.550 | 2.020 | 2.240 | +0.220 | 45% |" in md
    assert "### Forgetting as `pre/avg` (higher is better)" in md
    assert f"| {RHO0} | 0.500 | 43.20 | 38.00 | +5.20 | 0% | +5.20 | 0% |" in md
    assert f"| {RHO5} | 0.550 | 42.90 | 40.50 | +2.40 | 54% | +2.70 | 48% |" in md
    assert (tmp_path / "lf_frontier.png").exists() and (tmp_path / "lf_frontier_avg.png").exists()
    # no reference named and no base called "default": the rule the report used is stated with its choice
    assert f"reference base `{RHO0}` (the first base in sorted order: --reference-base names another)" in \
        write_report([tmp_path])
    with pytest.raises(ValueError, match=r"--reference-base='rho=0' is invalid: expected a base of the runs"):
        write_report([tmp_path], reference_base="rho=0")


BASES = ("pretrain=adamw", "pretrain=sam", "pretrain=wsd", "pretrain=wsd_sam_decay")


def _twelve_curves() -> list[dict]:
    runs = []
    for i, base in enumerate(BASES):
        runs.append(_run(base, f"Base ({base})", None, 1.0 + 0.01 * i, method="base"))
        for j, method in enumerate(("ft", "ewc", "cfs")):
            for k, lr in enumerate(("1e-4", "1e-3", "3e-3")):
                label = f"{method.upper()} ({base}, lr={lr})"
                runs.append(_run(base, label, 0.9 - 0.3 * k + 0.01 * i, 1.1 + k + 0.2 * j + 0.05 * i, method=method))
    return runs


def test_every_curve_of_a_frontier_past_ten_curves_is_told_apart(tmp_path, monkeypatch):
    """+experiment=sam_frontier's four bases, each fine-tuned by FT, EWC and CFS over three lrs: 12 curves, more than
    matplotlib's 10 colours. A colour per base, a line style and marker per method on it; each base's own loss drawn
    once, dotted, in its colour."""
    from figures import assert_distinct, assert_says_each_thing_once, capture, panels, series_looks

    runs = _twelve_curves()
    for i, r in enumerate(runs):
        (tmp_path / str(i)).mkdir()
        (tmp_path / str(i) / "results.json").write_text(json.dumps(r))
    figures = capture(monkeypatch)
    write_report([tmp_path])
    fig = figures["lf_frontier.png"]
    (looks,) = series_looks(fig)
    assert set(looks) == {f"{b}{m}" for b in BASES for m in ("", " · ewc", " · cfs")}
    assert_distinct(fig)
    assert_says_each_thing_once(fig)
    for b in BASES:
        assert looks[b][0] == looks[f"{b} · ewc"][0] == looks[f"{b} · cfs"][0]  # a base's curves share its colour
    (ax,) = panels(fig)
    assert len([line for line in ax.get_lines() if line.get_gid() == "base"]) == len(BASES)
    # the report's own frontier.png of these runs: learning is a loss here (lower is better), and its front says so
    fig = figures["frontier.png"]
    assert_distinct(fig)
    assert_says_each_thing_once(fig)
    (front,) = [line for line in panels(fig)[0].get_lines() if line.get_gid() == "front"]
    assert list(front.get_xdata()) == pytest.approx([0.9, 0.6, 0.3])  # adamw's FT runs, lowest loss last
    assert list(front.get_ydata()) == pytest.approx([1.1, 2.1, 3.1])
