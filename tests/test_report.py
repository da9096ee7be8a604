"""The report reproduces the numbers in the results files: means, sample stds, best cells, row order, CSV, plot.

    python -m pytest tests/test_report.py
"""
from __future__ import annotations

import csv
import json
import random
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from forgetting import report

ROOT = Path(__file__).resolve().parents[1]
TASKS = ["facts", "categories", "agreement", "patterns"]
# Per-label centres; Base listed last in the sweep so that "Base first" is something the report has to do.
CENTRES = {
    "FT": {"facts": 0.55, "categories": 0.45, "agreement": 0.70, "patterns": 0.66, "loss": 2.60, "arith": 0.60},
    "CFS": {"facts": 0.70, "categories": 0.53, "agreement": 0.88, "patterns": 0.62, "loss": 2.20, "arith": 0.55},
    "Base": {"facts": 0.80, "categories": 0.50, "agreement": 0.90, "patterns": 0.60, "loss": 2.00, "arith": 0.02},
}
HEADERS = {f"pre/{t}/acc": t for t in TASKS} | {
    "pre/avg": "Avg.", "pre/heldout/loss": "held-out loss ↓", "down/arith/exact_match": "arith"}


def make_sweep(root: Path) -> Path:
    """A Hydra-like multirun dir: jobs 0-8 (3 labels x 3 seeds, job 8 nested deeper) and a corrupt job 9."""
    rng = random.Random(0)
    job = 0
    for label, centre in CENTRES.items():
        for seed in range(3):
            acc = {t: centre[t] + rng.uniform(-0.01, 0.01) for t in TASKS}
            # Aggregates and downstream come first in the file: column order must not follow file order.
            metrics = {"down/arith/exact_match": centre["arith"] + rng.uniform(-0.01, 0.01),
                       "pre/avg": statistics.mean(acc.values()),
                       "pre/heldout/loss": centre["loss"] + rng.uniform(-0.05, 0.05)}
            metrics |= {f"pre/{t}/acc": v for t, v in acc.items()}
            run_dir = root / str(job) / ("nested/deeper" if job == 8 else "")
            run_dir.mkdir(parents=True)
            (run_dir / "results.json").write_text(json.dumps({
                "label": label, "method": label.lower(), "seed": seed,
                "overrides": [f"method={label.lower()}", f"seed={seed}"], "metrics": metrics}))
            job += 1
    (root / "9").mkdir()
    (root / "9" / "results.json").write_text('{"label": "FT", "metrics": {')  # killed mid-write
    return root


def expected(root: Path) -> dict[str, dict[str, list[float]]]:
    """label -> metric -> values, read straight from the well-formed files."""
    out: dict = {}
    for file in root.rglob("results.json"):
        try:
            run = json.loads(file.read_text())
        except json.JSONDecodeError:
            continue
        for metric, value in run["metrics"].items():
            out.setdefault(run["label"], {}).setdefault(metric, []).append(value)
    return out


def parse_table(markdown: str) -> tuple[list[str], dict[str, dict[str, str]]]:
    """The report's first table (the paired differences follow it)."""
    first = markdown[markdown.index("|"):]
    lines = [line for line in first[: first.index("\n\n")].splitlines() if line.startswith("|")]
    split = lambda line: [c.strip() for c in line.strip("|").split("|")]  # noqa: E731
    headers = split(lines[0])
    rows = {}
    labels = []
    for line in lines[2:]:
        cells = split(line)
        labels.append(cells[0])
        rows[cells[0]] = dict(zip(headers, cells))
    return labels, rows


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    sweep = make_sweep(tmp_path_factory.mktemp("sweep"))
    out = tmp_path_factory.mktemp("out")
    markdown = report.write_report([sweep], out, title="synthetic")
    return sweep, out, markdown


def test_collect_skips_the_corrupt_file_and_finds_the_nested_one(built, capsys):
    sweep, _, _ = built
    runs = report.collect([sweep])
    assert len(runs) == 9
    assert any("nested" in run["path"] for run in runs)
    warnings = capsys.readouterr().err.strip().splitlines()
    assert len(warnings) == 1 and str(sweep / "9" / "results.json") in warnings[0]


def test_table_cells_are_mean_and_95_interval_over_seeds_of_the_files(built):
    sweep, _, markdown = built
    labels, rows = parse_table(markdown)
    for label, metrics in expected(sweep).items():
        assert rows[label]["n"] == "3"
        for metric, values in metrics.items():
            scale, digits = (1, 3) if metric.endswith("/loss") else (100, 2)
            half = 4.302653 * statistics.stdev(values) / 3 ** 0.5  # t(0.975, 2 df) · s / √n
            want = f"{statistics.mean(values) * scale:.{digits}f} ± {half * scale:.{digits}f}"
            assert rows[label][HEADERS[metric]].strip("*") == want, (label, metric)


def test_columns_follow_the_paper_and_base_comes_first(built):
    _, _, markdown = built
    labels, rows = parse_table(markdown)
    assert labels == ["Base", "FT", "CFS"]  # Base first, then first appearance in the sweep
    assert list(rows["Base"])[2:] == [*TASKS, "Avg.", "held-out loss ↓", "arith"]


def test_best_cell_per_column_is_bold_and_loss_takes_the_minimum(built):
    sweep, _, markdown = built
    _, rows = parse_table(markdown)
    data = expected(sweep)
    for metric, head in HEADERS.items():
        means = {label: statistics.mean(data[label][metric]) for label in data}
        pick = min if metric.endswith("/loss") else max
        best = pick(means, key=means.get)
        bold = {label for label in rows if rows[label][head].startswith("**")}
        assert bold == {best}, (metric, bold, means)
    assert rows["Base"]["held-out loss ↓"].startswith("**")  # lowest loss, not highest


def test_csv_round_trips_the_raw_numbers(built):
    sweep, out, _ = built
    with open(out / "report.csv", newline="") as f:
        table = {row["label"]: row for row in csv.DictReader(f)}
    assert list(table) == ["Base", "FT", "CFS"]
    for label, metrics in expected(sweep).items():
        assert table[label]["n"] == "3"
        for metric, values in metrics.items():
            assert float(table[label][f"{metric}_mean"]) == pytest.approx(statistics.mean(values), rel=1e-12)
            assert float(table[label][f"{metric}_std"]) == pytest.approx(statistics.stdev(values), rel=1e-12)


def test_outputs_are_written_and_the_plot_is_a_real_png(built):
    _, out, markdown = built
    assert (out / "report.md").read_text() == markdown
    png = (out / "frontier.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(png) > 10_000  # axes, points, labels and front, not an empty canvas
    assert not list(out.glob("*.tmp"))  # atomic writes leave no temp files behind


def test_pareto_front_is_exactly_the_non_dominated_points():
    points = {
        "A": (1.0, 5.0),
        "B": (2.0, 4.0),
        "C": (1.5, 3.0),  # dominated by B
        "D": (3.0, 1.0),
        "E": (0.5, 5.0),  # ties A on y, worse on x: dominated
        "F": (3.0, 0.5),  # ties D on x, worse on y: dominated
    }
    assert report.pareto_front(points) == ["A", "B", "D"]


def test_single_seed_has_no_std():
    rows = report.aggregate([{"label": "FT", "seed": 0, "metrics": {"pre/avg": 0.5, "pre/heldout/loss": 2.0}}])
    assert rows[0]["n"] == 1 and rows[0]["std"] == {"pre/avg": None, "pre/heldout/loss": None}
    assert "±" not in report.to_markdown(rows)
    assert report.to_csv(rows).splitlines()[1] == "FT,1,0.5,,,,,2.0,,,,"  # no std, no interval


def test_order_overrides_the_default_row_order(built):
    sweep, _, _ = built
    rows = report.aggregate(report.collect([sweep]), order=["CFS", "FT"])
    assert [r["label"] for r in rows] == ["CFS", "FT", "Base"]


def test_cli_on_a_dir_without_results_exits_2_with_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "forgetting.report", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(tmp_path) in lines[0]
    assert not (tmp_path / "report.md").exists()


def test_kl_is_lower_is_better_and_not_a_percentage():
    """KL(base ‖ model) is 0 for the base and grows with forgetting: the smallest is best, shown as is."""
    rows = [{"label": label, "n": 1, "mean": {"pre/base_samples/kl": kl}, "std": {}}
            for label, kl in (("Base", 0.0), ("FT", 0.0092), ("CFS", 0.0014))]
    assert report.lower_is_better("pre/base_samples/kl")
    assert not report.is_percent(rows, "pre/base_samples/kl")
    assert report.header("pre/base_samples/kl") == "base_samples kl ↓"
