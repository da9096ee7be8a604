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


# ------------------------------------------------------------------------------- plots: never empty, series apart


def _write_runs(root: Path, runs: list[dict]) -> Path:
    for i, run in enumerate(runs):
        (root / str(i)).mkdir(parents=True)
        (root / str(i) / "results.json").write_text(json.dumps(run))
    return root


# +experiment=smollm2 (/work/runs/base_smollm2): a real model scored on held-out corpora and KL, no suite average
SMOLLM2 = [
    {"label": label, "method": label.lower(), "seed": 0, "base_label": "default",
     "overrides": [f"method={label.lower()}", "+experiment=smollm2"],
     "metrics": {"down/arith/exact_match": em, "pre/base_samples/kl": kl, "pre/base_samples/loss": 3.0 + kl,
                 "pre/stdlib_code/loss": code, "pre/stdlib_prose/loss": prose}}
    for label, em, kl, code, prose in (("Base", 0.0, 0.0, 2.394, 3.073), ("FT", 0.98, 0.0092, 2.401, 3.110),
                                       ("CFS", 0.93, 0.0014, 2.408, 3.101))]


def test_a_suite_without_an_average_plots_every_held_out_loss_and_kl_against_learning(tmp_path, monkeypatch):
    """The real-model preset has no pre/avg: one panel per forgetting measure it has, every run in each."""
    from figures import assert_distinct, capture, panels, series_looks

    figures = capture(monkeypatch)
    report.write_report([_write_runs(tmp_path, SMOLLM2)])
    fig = figures["frontier.png"]
    assert sorted(ax.get_ylabel() for ax in panels(fig)) == ["base_samples kl ↓", "stdlib_code loss ↓",
                                                             "stdlib_prose loss ↓"]  # not base_samples loss: KL + H
    assert [sorted(looks) for looks in series_looks(fig)] == [["Base", "CFS", "FT"]] * 3
    assert_distinct(fig)
    assert all("arith exact_match (%)" in ax.get_xlabel() for ax in panels(fig))


def test_points_far_apart_are_labelled_on_the_plot_and_close_ones_in_a_legend(tmp_path, monkeypatch):
    """A label beside each point while they stay apart; once two rows sit on one another (FT and CFS at a gentle lr)
    their labels would overprint, so every name goes to the legend and none onto the panels."""
    from figures import capture, legend_texts, panels

    figures = capture(monkeypatch)
    report.write_report([_write_runs(tmp_path / "apart", SMOLLM2)])
    fig = figures["frontier.png"]
    assert legend_texts(fig) == [] and all(sorted(t.get_text() for t in ax.texts) == ["Base", "CFS", "FT"]
                                           for ax in panels(fig))
    close = [*SMOLLM2, {**SMOLLM2[1], "label": "FT (lr=2e-05)", "overrides": ["method=ft", "trainer.lr=2e-05"],
                        "metrics": {k: v * 1.001 for k, v in SMOLLM2[1]["metrics"].items()}}]
    report.write_report([_write_runs(tmp_path / "close", close)])
    fig = figures["frontier.png"]
    assert all(len(ax.texts) == 0 for ax in panels(fig)) and len(legend_texts(fig)[0]) == 4


def test_the_toy_sweep_plots_the_average_and_the_held_out_loss(built, monkeypatch, tmp_path):
    from figures import assert_distinct, capture, panels, series_looks

    sweep, _, _ = built
    figures = capture(monkeypatch)
    report.write_report([sweep], tmp_path)
    fig = figures["frontier.png"]
    assert [ax.get_ylabel() for ax in panels(fig)] == ["pre-existing average (%) ↑", "held-out loss ↓"]
    assert [sorted(looks) for looks in series_looks(fig)] == [["Base", "CFS", "FT"]] * 2
    assert_distinct(fig)


def _sam_sweep() -> list[dict]:
    """+experiment=sam_bases and +experiment=sam_frontier together: 4 bases x 3 seeds, each fine-tuned at 6 lrs."""
    rng = random.Random(1)
    runs = []
    for base in ("adamw", "sam", "wsd", "wsd_sam_decay"):
        for seed in range(3):
            for lr in (None, "1e-4", "3e-4", "5e-4", "1e-3", "2e-3", "3e-3"):
                shift = 0.0 if lr is None else float(lr) * 1000
                runs.append({
                    "label": f"Base (pretrain={base})" if lr is None else f"FT (pretrain={base}, lr={lr})",
                    "method": "base" if lr is None else "ft", "seed": seed, "base_label": f"pretrain={base}",
                    "overrides": [f"pretrain={base}", f"seed={seed}"] + ([f"trainer.lr={lr}"] if lr else []),
                    "metrics": {"down/arith/exact_match": min(1.0, 0.3 * shift + rng.uniform(0, 0.05)),
                                "down/arith/loss": 1.1 / (1 + shift) + rng.uniform(0, 0.05),
                                "pre/avg": 1.0 - 0.2 * shift + rng.uniform(-0.02, 0.02),
                                "pre/heldout/loss": 1.0 + 3 * shift + rng.uniform(0, 0.2),
                                "pre/base_samples/kl": 3 * shift + rng.uniform(0, 0.2),
                                "pre/base_samples/loss": 2.0 + 3 * shift}})
    return runs


def test_a_sweep_of_the_sam_presets_size_tells_all_its_rows_apart(tmp_path, monkeypatch):
    """28 rows: a colour per base, a marker per run on it (the same run the same marker on every base); the legend
    names the 4 bases and the 7 runs, each once, instead of 28 rows that repeat their base."""
    from figures import assert_distinct, assert_says_each_thing_once, capture, legend_texts, series_looks

    figures = capture(monkeypatch)
    report.write_report([_write_runs(tmp_path, _sam_sweep())])
    fig = figures["frontier.png"]
    looks = series_looks(fig)
    assert len(looks) == 3 and all(len(panel) == 28 for panel in looks)  # avg, held-out loss, KL
    assert_distinct(fig)
    assert_says_each_thing_once(fig)
    lrs = ("1e-4", "3e-4", "5e-4", "1e-3", "2e-3", "3e-3")
    assert legend_texts(fig) == [["pretrain=adamw", "pretrain=sam", "pretrain=wsd", "pretrain=wsd_sam_decay"],
                                 ["Base"] + [f"FT (lr={lr})" for lr in lrs]]
    on_sam = {look for name, look in looks[0].items() if "pretrain=sam," in name or name.endswith("=sam)")}
    assert len({look[0] for look in on_sam}) == 1 and len(on_sam) == 7  # one base, one colour, 7 markers
    same_run = {look[1:] for name, look in looks[0].items() if name.endswith("lr=1e-3)")}
    assert len(same_run) == 1  # FT at lr 1e-3 has one marker on every base


def test_with_nothing_to_plot_no_frontier_is_written_and_the_report_says_why(tmp_path):
    sweep = _write_runs(tmp_path / "sweep", [
        {"label": "FT", "method": "ft", "seed": 0, "metrics": {"down/arith/exact_match": 0.5}}])
    (sweep / "frontier.png").write_bytes(b"an empty plot an earlier report wrote")
    md = report.write_report([sweep])
    assert not (sweep / "frontier.png").exists()
    assert md.count("No frontier.png") == 1
    assert ("\nNo frontier.png: no forgetting measure (pre/..., e.g. pre/avg, a held-out loss or KL) in the "
            "runs.\n") in md
    proc = subprocess.run([sys.executable, "-m", "forgetting.report", str(sweep)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and "wrote" in proc.stdout and "frontier.png" not in proc.stdout.split("wrote")[-1]


# ------------------------------------------------------------------------------------------------- labels

BYO = ("dataset=jsonl, path={d}/train.jsonl, query_field=prompt, response_field=completion, "
       "test_path={d}/test.jsonl, limit=640")


def test_row_labels_name_what_differs_between_the_rows_not_the_files(tmp_path):
    """A bring-your-own sweep labelled the way the pipeline used to: every row carries the same files and fields.
    The table names the rows by what tells them apart; the rest is said once under it, paths by their file name;
    the CSV and results.json keep the full labels."""
    d = "/home/someone/projects/mydata"
    items = BYO.format(d=d)
    runs = [{"label": f"{name} ({items}{extra})", "method": name.lower(), "seed": 0,
             "metrics": {"pre/avg": avg, "down/mydata/exact_match": em}}
            for name, extra, avg, em in (("Base", "", 0.6, 0.0), ("FT", ", lr=1e-4", 0.5, 0.8),
                                         ("CFS", ", lr=1e-4", 0.58, 0.7))]
    sweep = _write_runs(tmp_path / "sweep", runs)
    md = report.write_report([sweep])
    labels, _ = parse_table(md)
    assert labels == ["Base", "FT", "CFS"]
    assert d not in md
    assert ("Left out of the row labels (no row differs in them; full overrides in each results.json): "
            "`dataset=jsonl`, `path=train.jsonl`, `query_field=prompt`, `response_field=completion`, "
            "`test_path=test.jsonl`, `limit=640`, `lr=1e-4`.") in md
    with open(sweep / "report.csv", newline="") as f:
        assert [row["label"] for row in csv.DictReader(f)] == [r["label"] for r in runs]


def test_what_differs_stays_in_the_labels_and_labels_never_collide():
    from forgetting import plots

    brief, left_out = plots.brief_labels(["FT (dataset=dates, limit=640)", "FT (dataset=colours, limit=640)",
                                           "CFS (dataset=dates, limit=640, temperature=0.6)",
                                           "CFS (dataset=dates, limit=640)"])
    assert list(brief.values()) == ["FT (dataset=dates)", "FT (dataset=colours)",
                                    "CFS (dataset=dates, temperature=0.6)", "CFS (dataset=dates)"]
    assert left_out == ["limit=640"]
    # one path per row: their file names, when those tell them apart; else the paths
    brief, _ = plots.brief_labels(["FT (path=/a/x.jsonl)", "FT (path=/b/y.jsonl)"])
    assert list(brief.values()) == ["FT (path=x.jsonl)", "FT (path=y.jsonl)"]
    brief, _ = plots.brief_labels(["FT (path=/a/train.jsonl)", "FT (path=/b/train.jsonl)"])
    assert list(brief.values()) == ["FT (path=/a/train.jsonl)", "FT (path=/b/train.jsonl)"]
    # a value with commas inside brackets is one override
    assert plots.split_label("R (recycle_from=[v1,v2], starts=[{weight: 1}, {weight: 2}])") == (
        "R", ["recycle_from=[v1,v2]", "starts=[{weight: 1}, {weight: 2}]"])
