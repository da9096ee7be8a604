"""Intervals on hand-made runs with known answers: over seeds (t), over examples (bootstrap), paired and unpaired.

    pytest tests/test_intervals.py
"""
from __future__ import annotations

import json
import random

import pytest

from forgetting import report
from forgetting.evaluate.examples import estimate, record
from forgetting.intervals import (
    example_interval,
    excludes_zero,
    match_key,
    pair_runs,
    paired_difference,
    paired_example_interval,
    seed_interval,
)


def test_seed_interval_is_the_t_interval():
    lo, hi = seed_interval([1.0, 2.0, 3.0])  # mean 2, sd 1, t(0.975, 2 df) = 4.3027
    assert (lo, hi) == pytest.approx((2 - 4.3027 / 3 ** 0.5, 2 + 4.3027 / 3 ** 0.5), abs=1e-4)
    assert seed_interval([1.0]) is None


def test_bootstrap_interval_of_a_proportion_is_the_binomial_one():
    rng = random.Random(0)
    values = [1.0] * 200 + [0.0] * 200
    rng.shuffle(values)
    lo, hi = example_interval([record(values, range(400))])
    half = 1.96 * (0.25 / 400) ** 0.5  # 0.049
    assert lo == pytest.approx(0.5 - half, abs=0.01) and hi == pytest.approx(0.5 + half, abs=0.01)


def test_a_ratio_metric_is_resampled_as_a_ratio():
    rec = record([2.0, 4.0], ["a", "b"], weights=[1, 3])  # token-weighted: (2 + 12) / 4
    assert estimate(rec) == 3.5 and estimate(rec, [1, 1]) == 4.0


def test_paired_differences_see_what_unpaired_intervals_cannot():
    """Seeds (or documents) vary a lot, the method adds exactly 0.1 to each: the intervals of each method's mean
    overlap, the paired difference is 0.1 with no spread."""
    ft, cfs = [1.0, 2.0, 3.0], [1.1, 2.1, 3.1]
    a, b = seed_interval(ft), seed_interval(cfs)
    assert a[1] > b[0]  # unpaired: overlapping
    d = seed_interval([y - x for x, y in zip(ft, cfs)])
    assert d == pytest.approx((0.1, 0.1)) and excludes_zero(d)

    rng = random.Random(1)
    docs = [rng.uniform(1, 5) for _ in range(80)]
    tokens = [rng.randint(10, 100) for _ in range(80)]
    ref = record(docs, range(80), tokens)
    run = record([v + 0.1 for v in docs], range(80), tokens)
    lo, hi = example_interval([ref])
    assert hi - lo > 0.3  # the documents' spread
    assert paired_example_interval([run], [ref]) == pytest.approx((0.1, 0.1), abs=1e-9)
    # records of other examples are never paired
    assert paired_example_interval([record(docs, range(1, 81), tokens)], [ref]) is None


def _run(label, method, seed, lr, metrics, examples=None):
    return {"label": label, "method": method, "seed": seed, "metrics": metrics, "examples": examples or {},
            "overrides": [f"method={method}", f"trainer.lr={lr}", f"seed={seed}"]}


def test_runs_pair_with_the_reference_run_that_differs_only_in_the_method():
    runs = [_run("FT", "ft", s, lr, {"m": s + lr}) for s in (0, 1) for lr in (1, 2)]
    runs += [_run("CFS", "cfs", s, lr, {"m": s + lr + 0.5}) for s in (0, 1) for lr in (1, 2)]
    runs.append({**_run("CFS mix", "cfs", 0, 1, {"m": 9.0}),
                 "overrides": ["method=cfs", "method.starts=[{}]", "trainer.lr=1", "seed=0"]})
    pairs = pair_runs(runs, "FT")
    assert sorted(pairs) == ["CFS", "CFS mix"]
    for run, ref in pairs["CFS"]:
        assert match_key(run) == match_key(ref) and ref["label"] == "FT"
    assert paired_difference(pairs["CFS"], "m")["mean"] == pytest.approx(0.5)
    assert paired_difference(pairs["CFS mix"], "m")["mean"] == pytest.approx(9.0 - 1)


def test_a_reference_base_pairs_every_base_with_the_method_and_all_else_matched():
    """``pretrain=adamw``: each other base's run — one built with two overrides (SAM at ρ 0.1) too — pairs with the
    AdamW base's run of the same method, lr and seed, never with another method's or another lr's."""
    bases = {"pretrain=adamw": 1.0, "pretrain=sam": 0.7, "pretrain=sam, model.pretrain.rho=0.1": 0.6}
    runs = [{**_run(f"{m} {b} {lr}", m, s, lr, {"m": v + (m == "cfs") + lr}), "base_label": b,
             "overrides": [*b.split(", "), f"method={m}", f"trainer.lr={lr}", f"seed={s}"]}
            for b, v in bases.items() for m in ("ft", "cfs") for lr in (1, 2) for s in (0, 1, 2)]
    pairs = pair_runs(runs, "pretrain=adamw")
    assert len(pairs) == 8 and not any("adamw" in label for label in pairs)
    for label, matched in pairs.items():
        assert len(matched) == 3
        assert all(ref["method"] == run["method"] and ref["seed"] == run["seed"] and ref["overrides"][-2:-1] ==
                   run["overrides"][-2:-1] for run, ref in matched)
        want = -0.4 if "rho" in label else -0.3
        assert paired_difference(matched, "m")["mean"] == pytest.approx(want)
    assert pair_runs(runs, "pretrain=lion") == {}
    # an override that is not a base's: only its key varies
    other = pair_runs(runs, "trainer.lr=1")
    assert all(paired_difference(m, "m")["mean"] == pytest.approx(1.0) for m in other.values()) and len(other) == 6


def test_the_report_takes_the_reference_by_its_printed_row_name_and_says_when_it_names_nothing(tmp_path, capsys):
    """Rows print as "CFS" and "CFS (starts=…)" (the lr is shared); ``--reference CFS`` pairs the mixture with BOS-only
    CFS of its seed; a reference that names no run leaves one line saying so, not a silent gap."""
    for seed in range(3):
        for label, extra, value in (("CFS (lr=1)", [], 1.0), ("CFS (lr=1, starts=[mix])", ["method.starts=[mix]"], 1.2),
                                    ("FT (lr=1)", [], 2.0)):
            method = label.split()[0].lower()
            run = {**_run(label, method, seed, 1, {"pre/x/loss": value + seed}),
                   "overrides": [f"method={method}", "trainer.lr=1", f"seed={seed}", *extra]}
            (tmp_path / f"{method}{len(extra)}{seed}").mkdir()
            (tmp_path / f"{method}{len(extra)}{seed}" / "results.json").write_text(json.dumps(run))
    markdown = report.write_report([tmp_path], tmp_path / "out", reference="CFS")
    section = markdown.split("## Paired differences vs CFS")[1]
    mix = next(line for line in section.splitlines() if line.startswith("| CFS (starts=[mix]) |"))
    assert mix.split("|")[3].strip().startswith("+0.2000 [+0.2000, +0.2000]\\*")
    assert next(line for line in section.splitlines() if line.startswith("| FT |")).split("|")[3].strip() \
        .startswith("+1.0000")
    markdown = report.write_report([tmp_path], tmp_path / "out", reference="LoRA")
    assert "## Paired differences vs LoRA\n\nNone: no run is `LoRA`." in markdown
    assert "--reference LoRA: no run is `LoRA`" in capsys.readouterr().err


def test_the_report_marks_the_differences_that_exclude_zero(tmp_path):
    """Three seeds; CFS's loss is FT's − 0.1 on every document of every seed (excludes 0 both ways); LoRA's accuracy
    differs from FT's by noise that averages to nearly 0 (excludes 0 neither way)."""
    rng = random.Random(2)
    docs = [rng.uniform(2, 3) for _ in range(50)]
    for seed in range(3):
        shift = rng.uniform(-0.3, 0.3)
        for label, method, delta in (("FT", "ft", 0.0), ("CFS", "cfs", -0.1), ("LoRA", "lora", 0.0)):
            loss = [d + shift + delta for d in docs]
            acc = [float(rng.random() < 0.5) for _ in range(40)]
            examples = {"pre/x/loss": record(loss, range(50)), "down/y/exact_match": record(acc, range(40))}
            run = _run(label, method, seed, 1, {k: estimate(v) for k, v in examples.items()}, examples)
            (tmp_path / f"{label}{seed}").mkdir()
            (tmp_path / f"{label}{seed}" / "results.json").write_text(json.dumps(run))
    markdown = report.write_report([tmp_path], tmp_path / "out")
    section = markdown.split("## Paired differences vs FT")[1]
    cfs = next(line for line in section.splitlines() if line.startswith("| CFS |"))
    lora = next(line for line in section.splitlines() if line.startswith("| LoRA |"))
    loss_cell = cfs.split("|")[3]
    assert loss_cell.strip().startswith("-0.1000") and "\\*" in loss_cell and "†" in loss_cell
    assert "\\*" not in lora.split("|")[4] and "†" not in lora.split("|")[4]
    rows = report.aggregate(report.collect([tmp_path]))
    assert all(r["ci"]["pre/x/loss"][2] == "seeds" for r in rows)


def test_one_seed_gets_the_interval_over_examples(tmp_path):
    values = [1.0] * 30 + [0.0] * 70
    run = _run("FT", "ft", 0, 1, {"down/y/exact_match": 0.3}, {"down/y/exact_match": record(values, range(100))})
    (row,) = report.aggregate([run])
    lo, hi, kind = row["ci"]["down/y/exact_match"]
    assert kind == "examples" and lo < 0.3 < hi and hi - lo == pytest.approx(2 * 1.96 * (0.21 / 100) ** 0.5, abs=0.03)
    assert " ± " in report.to_markdown([row])
