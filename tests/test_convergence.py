"""Report sections of paper 004 (forgetting/convergence.py) on hand-made runs: the speed-up of a recycled start and
the source × target table of recycled models."""
from __future__ import annotations

import json
import random

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
    # no pre-existing measure in these runs: no frontier.png, and the report says why in one line
    assert not (tmp_path / "frontier.png").exists()
    assert ("\nNo frontier.png: no forgetting measure (pre/..., e.g. pre/avg, a held-out loss or KL) in the "
            "runs.\n") in md


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


# The curves +experiment=recycle_versions' README commands produce (the 14 of docs/recycle_convergence.png), with the
# labels and overrides the pipeline writes: FT on v1–v5 and the control, CFS on v3 and v4, and recycled starts.
STEPS = (10, 25, 50, 75, 100, 125, 150)


def _preset_run(method, version, source=None, iterative=None, seed=0):
    overrides = ["+experiment=recycle_versions", f"method={method}", f"version={version}", f"seed={seed}"]
    items = [f"version={version}"]
    if source:
        overrides.append(f"method.recycle_from={source}")
        items.append(f"recycle_from={source}")
    if iterative is not None:
        overrides.append(f"method.recycle_iterative={str(iterative).lower()}")
        items.append(f"recycle_iterative={iterative}")
    label = f"{dict(ft='FT', cfs='CFS', recycle='Recycle')[method]} ({', '.join(items)})"
    rng = random.Random(label)  # each run its own numbers, the same in every test session
    start, final = {"ft": (3.5, 0.85), "cfs": (3.6, 0.88)}.get(method) or (rng.uniform(0.85, 1.8),
                                                                           rng.uniform(0.5, 0.8))
    metrics = {f"curve/{s}/down_loss": final + (start - final) * (10 / s) ** 1.5 + 0.01 * seed for s in STEPS}
    metrics |= {"down/arith/exact_match": 0.5 - final / 2 + rng.uniform(0, 0.05),
                "down/arith/loss": metrics["curve/150/down_loss"], "pre/avg": rng.uniform(0.6, 0.9),
                "pre/heldout/loss": rng.uniform(8.4, 14)}
    return {"label": label, "method": method, "seed": seed, "base_label": f"version={version}",
            "overrides": overrides, "metrics": metrics}


PRESET = [_preset_run("cfs", "v3"), _preset_run("cfs", "v4"),
          _preset_run("recycle", "v4", "[v1,v2,v3]", True), _preset_run("recycle", "v4", "[v1,v2,v3]", False),
          _preset_run("recycle", "v4", "[v1]"),
          *(_preset_run("ft", v) for v in ("v1", "v2", "v3", "v4", "v5", "control")),
          *(_preset_run("recycle", v, "[v3]") for v in ("v4", "v5", "control"))]


def _write(root, runs):
    for i, r in enumerate(runs):
        (root / str(i)).mkdir()
        (root / str(i) / "results.json").write_text(json.dumps(r))
    return root


def test_the_presets_curves_are_small_multiples_that_tell_every_series_apart(tmp_path, monkeypatch):
    """14 curves over 6 targets: a panel per target; within a panel a colour per method and a look per start, the
    same start looking the same on every target; legends name each run once, without the target in the title."""
    from figures import assert_distinct, assert_says_each_thing_once, capture, legend_texts, panels, series_looks

    figures = capture(monkeypatch)
    md = write_report([_write(tmp_path, PRESET)])
    fig = figures["convergence.png"]
    looks = series_looks(fig)
    assert sorted(name for panel in looks for name in panel) == sorted(r["label"] for r in PRESET)  # all, once each
    assert_distinct(fig)
    assert_says_each_thing_once(fig)
    assert [ax.get_title() for ax in panels(fig)] == [f"version={v}" for v in ("v3", "v4", "v1", "v2", "v5", "control")]
    from forgetting.convergence import MAX_PANEL

    assert max(len(panel) for panel in looks) <= MAX_PANEL
    v4 = dict(zip(legend_texts(fig)[1], looks[1].values()))
    assert set(v4) == {"CFS", "FT", "Recycle (recycle_from=[v1,v2,v3], recycle_iterative=True)",
                       "Recycle (recycle_from=[v1,v2,v3], recycle_iterative=False)", "Recycle (recycle_from=[v1])",
                       "Recycle (recycle_from=[v3])"}
    same_start = {name: look for panel in looks for name, look in panel.items() if "recycle_from=[v3]" in name}
    assert len(set(same_start.values())) == 1 and len(same_start) == 3
    # the table's run column leaves out the target its own column names
    assert "| version=v5 | Recycle (recycle_from=[v3]) | 0 |" in md


def test_seeds_of_a_run_are_one_curve_their_mean(tmp_path, monkeypatch):
    from figures import capture, series_looks

    figures = capture(monkeypatch)
    runs = [_preset_run("ft", "v4", seed=s) for s in (0, 1)] + [_preset_run("recycle", "v4", "[v3]", seed=s)
                                                                  for s in (0, 1)]
    write_report([_write(tmp_path, runs)])
    fig = figures["convergence.png"]
    (looks,) = series_looks(fig)
    assert set(looks) == {"FT (version=v4)", "Recycle (version=v4, recycle_from=[v3])"}
    ft = next(line for line in fig.axes[0].get_lines() if line.get_gid() == "series:FT (version=v4)")
    assert list(ft.get_ydata()) == pytest.approx([0.85 + 2.65 * (10 / s) ** 1.5 + 0.005 for s in STEPS])
