"""Sweep directory -> paper-shaped tables (Tables 2-4) and a learning-forgetting frontier plot.

    python -m forgetting.report outputs/multirun/2026-11-23/12-00-00

Every run of the pipeline leaves a ``results.json`` somewhere under the sweep directory::

    {"label": "CFS", "method": "cfs", "seed": 0, "overrides": ["method=cfs", "seed=0"],
     "metrics": {"pre/facts/acc": 0.71, ..., "pre/avg": 0.6775, "pre/heldout/loss": 2.31,
                 "down/arith/exact_match": 0.42}}

Runs are grouped by ``label`` (one table row each, named by what differs between the rows: :func:`brief_labels`) and
averaged over seeds (mean ± sample std). Writes ``report.md``, ``report.csv`` and ``frontier.png`` (learning against
each forgetting measure the runs have; not written when nothing can be plotted, and report.md says why) into
``--out`` (default: the first sweep directory). Plots and labels: docs/report.md.
A metric's direction is what its evaluator declared (``metric_info`` in results.json); for runs made before
declarations, metrics whose name ends in ``/loss``, ``/ppl``, ``/perplexity`` or ``/kl`` are lower-is-better.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import re
import statistics
import sys
from pathlib import Path
from typing import Iterable, Optional, Sequence

from forgetting.convergence import section as recycling
from forgetting.frontier import section
from forgetting.intervals import (
    example_interval,
    excludes_zero,
    pair_runs,
    paired_difference,
    reference_of,
    seed_interval,
)
from forgetting.plots import (
    atomic_write,
    base_items,
    brief_labels,
    declare,
    lower_is_better,
    save_png,
    series_styles,
    split_label,
    without,
)

# losses, KL, and the rise of a loss under weight perturbation (robust/<kind>/increase) and along the
# fine-tuning direction (sharp/direction/...)
DEFAULT_TITLE = "Learning vs. forgetting"
AVG = "pre/avg"  # the suite's average, defined in forgetting.evaluate; the report only reads it
# Task names as they appear in metric keys are identifiers; a few read better spelled out in a table header.
_PRETTY = {"heldout": "held-out", "avg": "Avg."}


class NoResults(FileNotFoundError):
    pass




# ---------------------------------------------------------------------------------------------- reading


def _natural_key(path: Path) -> list:
    # Hydra numbers jobs 0, 1, ..., 10: plain string order would put job 10 before job 2 and scramble the
    # "order of first appearance" that rows follow.
    return [int(tok) if tok.isdigit() else tok for tok in re.split(r"(\d+)", str(path))]


def _result_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted(path.rglob("results.json"), key=_natural_key)


def collect(paths: Iterable[str | os.PathLike]) -> list[dict]:
    """Every readable results.json under ``paths`` (files or directories), in sweep order."""
    runs = []
    for root in paths:
        for file in _result_files(Path(root)):
            try:
                run = json.loads(file.read_text())
                if not isinstance(run.get("label"), str) or not isinstance(run.get("metrics"), dict):
                    raise ValueError("needs a string 'label' and a 'metrics' object")
            except (OSError, ValueError, AttributeError) as err:
                # One broken run (killed mid-write by an older pipeline, hand-edited) must not hide the rest.
                print(f"warning: skipping {file}: {err}".replace("\n", " "), file=sys.stderr)
                continue
            run["path"] = str(file)
            runs.append(run)
    declare(runs)
    return runs


# ------------------------------------------------------------------------------------------ aggregation


def _dedupe(runs: list[dict]) -> list[dict]:
    # A finished config rerun into a new sweep dir rewrites an identical results.json; passing both sweep dirs
    # must not count that seed twice (it would shrink the std and inflate n).
    by_key: dict = {}
    for run in runs:
        key = (run["label"], run.get("seed")) if run.get("seed") is not None else id(run)
        if key in by_key:
            print(f"warning: {run['path']} repeats label={run['label']!r} seed={run['seed']}; "
                  f"keeping it over {by_key[key]['path']}", file=sys.stderr)
        by_key[key] = run
    return list(by_key.values())


def _order_labels(labels: list[str], order: Optional[Sequence[str]]) -> list[str]:
    if order:
        unknown = [name for name in order if name not in labels]
        if unknown:
            print(f"warning: --order names labels with no results: {', '.join(unknown)}", file=sys.stderr)
        head = [name for name in order if name in labels]
    else:
        head = [name for name in labels if name == "Base"]
    return head + [name for name in labels if name not in head]


def aggregate(runs: list[dict], order: Optional[Sequence[str]] = None) -> list[dict]:
    """One row per label: ``{"label", "n", "mean": {metric: float}, "std": {metric: float | None},
    "ci": {metric: (low, high, "seeds" | "examples")}}``.

    Rows come "Base" first, then in order of first appearance, unless ``order`` lists labels explicitly
    (labels it omits follow in their default order). ``std`` is the sample std (ddof=1), None when n=1. ``ci`` is
    the 95% interval of the mean (``forgetting.intervals``): over seeds (t) when n ≥ 2, else over the examples the
    run scored (bootstrap), for metrics that recorded them; absent otherwise.
    """

    groups: dict[str, list[dict]] = {}
    for run in _dedupe(runs):
        groups.setdefault(run["label"], []).append(run)

    rows = []
    for label in _order_labels(list(groups), order):
        members = groups[label]
        metrics = list(dict.fromkeys(m for run in members for m in run["metrics"]))
        mean, std, ci = {}, {}, {}
        for metric in metrics:
            values = [float(run["metrics"][metric]) for run in members
                      if isinstance(run["metrics"].get(metric), (int, float))]
            if len(values) < len(members):
                print(f"warning: {label}: {metric} present in {len(values)} of {len(members)} runs",
                      file=sys.stderr)
            if not values:
                continue
            mean[metric] = statistics.mean(values)
            std[metric] = statistics.stdev(values) if len(values) > 1 else None
            interval = seed_interval(values)
            if interval is not None:
                ci[metric] = (*interval, "seeds")
            else:
                records = [run.get("examples", {}).get(metric) for run in members]
                interval = example_interval(records) if all(records) else None
                if interval is not None:
                    ci[metric] = (*interval, "examples")
        rows.append({"label": label, "n": len(members), "mean": mean, "std": std, "ci": ci})
    return rows


def default_columns(rows: list[dict]) -> list[str]:
    """Paper order: pre-existing tasks, their Avg., held-out loss(es), then downstream (then anything else)."""
    seen = list(dict.fromkeys(m for row in rows for m in row["mean"]))
    pre = [m for m in seen if m.startswith("pre/")]
    tasks = [m for m in pre if m != "pre/avg" and not lower_is_better(m)]
    losses = [m for m in pre if lower_is_better(m)]
    down = [m for m in seen if m.startswith("down/")]
    rest = [m for m in seen if not m.startswith(("pre/", "down/"))]
    return tasks + [m for m in pre if m == "pre/avg"] + losses + down + rest


# ---------------------------------------------------------------------------------------------- tables


def header(metric: str, columns: Sequence[str] = ()) -> str:
    """Short column name: the task (``facts``), with the metric only when needed to tell columns apart."""
    parts = metric.split("/")
    task = _PRETTY.get(parts[1], parts[1]) if len(parts) > 1 else metric
    if len(parts) < 3:
        return task
    if lower_is_better(metric):
        # "held-out" alone says nothing; the metric name is what tells a reader it is a loss.
        return f"{task} {parts[-1]} ↓"
    same_task = [c for c in columns if c.split("/")[1:2] == parts[1:2]]
    if len(same_task) <= 1:
        return task
    metrics = [c.split("/")[-1] for c in same_task]
    # the metric tells columns of one task apart (colours exact_match, colours loss); else the group does too
    return f"{task} {parts[-1]}" if len(set(metrics)) == len(metrics) else " ".join(parts)


def is_percent(rows: list[dict], metric: str) -> bool:
    """Accuracy-type column: higher-is-better with every mean in [0, 1], so shown ×100 like the paper."""
    means = [row["mean"][metric] for row in rows if metric in row["mean"]]
    return not lower_is_better(metric) and bool(means) and all(0.0 <= v <= 1.0 for v in means)


def _cells(rows: list[dict], metric: str) -> list[str]:
    scale, digits = (100.0, 2) if is_percent(rows, metric) else (1.0, 3)
    shown = [round(row["mean"][metric] * scale, digits) if metric in row["mean"] else None for row in rows]
    finite = [v for v in shown if v is not None and math.isfinite(v)]
    # Compare displayed values, so two cells that print the same are both bold or both plain.
    best = (min(finite) if lower_is_better(metric) else max(finite)) if finite else None
    cells = []
    for row, value in zip(rows, shown):
        if value is None:
            cells.append("—")
            continue
        text = f"{value:.{digits}f}"
        interval = row.get("ci", {}).get(metric)
        if interval is not None:  # the larger side of a bootstrap interval, which need not be symmetric
            mean = row["mean"][metric]
            text += f" ± {max(mean - interval[0], interval[1] - mean) * scale:.{digits}f}"
        cells.append(f"**{text}**" if value == best else text)
    return cells


def to_markdown(rows: list[dict], columns: Optional[Sequence[str]] = None) -> str:
    """A Markdown table, rows = labels (brief: :func:`brief_labels`); best mean per column in bold (min for
    lower-is-better)."""
    columns = list(columns) if columns is not None else default_columns(rows)
    names, _ = brief_labels([row["label"] for row in rows])
    by_column = [_cells(rows, metric) for metric in columns]
    lines = [
        "| | n | " + " | ".join(header(m, columns) for m in columns) + " |",
        "|:--|--:|" + "--:|" * len(columns),
    ]
    for i, row in enumerate(rows):
        lines.append(f"| {names[row['label']]} | {row['n']} | " + " | ".join(cells[i] for cells in by_column) + " |")
    return "\n".join(lines) + "\n"


def _caption(rows: list[dict], columns: Sequence[str]) -> str:
    pre = [header(m, columns) for m in columns if m.startswith("pre/")]
    down = [header(m, columns) for m in columns if m.startswith("down/")]
    percent = [header(m, columns) for m in columns if is_percent(rows, m)]
    parts = []
    if pre:
        parts.append(f"Pre-existing tasks: {', '.join(pre)}.")
    if down:
        parts.append(f"Downstream: {', '.join(down)}.")
    kinds = {row.get("ci", {}).get(m, (0, 0, None))[2] for row in rows for m in columns} - {None}
    why = {"seeds": "t over the n seeds", "examples": "bootstrap over the examples scored, where n = 1"}
    parts.append("Mean over n seeds ± the half-width of its 95% interval (" +
                 "; ".join(why[k] for k in ("seeds", "examples") if k in kinds) + ")" if kinds else
                 "Mean over n seeds (one seed and no per-example values: no interval)")
    parts[-1] += "; best per column in bold (↓: lower is better)."
    if percent:
        parts.append("Accuracy-type columns in %.")
    return " ".join(parts)


def to_csv(rows: list[dict], columns: Optional[Sequence[str]] = None) -> str:
    """Raw numbers: ``label,n,<metric>_mean,<metric>_std,<metric>_ci_low,<metric>_ci_high,<metric>_ci,...``;
    empty std when n=1, empty interval where none (``_ci``: over "seeds" or "examples"), empty cells when absent."""
    columns = list(columns) if columns is not None else default_columns(rows)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    stats = ("mean", "std", "ci_low", "ci_high", "ci")
    writer.writerow(["label", "n"] + [f"{m}_{stat}" for m in columns for stat in stats])
    for row in rows:
        cells = [row["label"], row["n"]]
        for metric in columns:
            interval = row.get("ci", {}).get(metric) or (None, None, None)
            for value in (row["mean"].get(metric), row["std"].get(metric), *interval):
                cells.append("" if value is None else value if isinstance(value, str) else repr(value))
        writer.writerow(cells)
    return buf.getvalue()


def paired_section(rows: list[dict], runs: list[dict], columns: Sequence[str], reference: Optional[str] = None) -> str:
    """The paired differences against the reference runs: per label and metric, the mean of (run − its reference run)
    over the pairs matched on everything but what the comparison varies (``forgetting.intervals.pair_runs``), with its
    95% interval over seeds and, for metrics with per-example values, over examples. ``reference``: a method (default
    ``ft``), a row label as the table prints it (``CFS``) or in full, or an override (``pretrain=adamw``). "" when
    the default reference pairs with nothing; a line saying why when a reference given explicitly does not."""

    runs = _dedupe(runs)
    names, _ = brief_labels([row["label"] for row in rows])
    given, reference = reference, reference or "ft"
    shown = {brief: full for full, brief in names.items()}
    found = reference_of(runs, reference)
    if found is None and reference in shown:
        reference = shown[reference]  # the row's name as the table prints it
        found = reference_of(runs, reference)
    pairs = pair_runs(runs, reference)
    if not pairs:
        if given is None:
            return ""
        why = (f"no run is `{given}`" if found is None else
               f"no other run matches a `{given}` run on its seed and every other override")
        rows_named = ", ".join(f"`{names[row['label']]}`" for row in rows)
        print(f"warning: --reference {given}: {why}", file=sys.stderr)
        return (f"## Paired differences vs {given}\n\nNone: {why}. A reference is a method (`ft`), a row as the "
                f"table names it ({rows_named}), or an override the runs carry (`pretrain=adamw`).\n")
    varies = found[1]
    name = names.get(reference) or (f"`{reference}`" if varies != "method" else reference.upper())
    what = {"method": "the method", "base": "the base model"}.get(varies, f"`{varies}`")

    def fmt(v: float, metric: str) -> str:  # accuracy-type columns in percentage points, as the table shows them
        return f"{100 * v:+.2f}" if is_percent(rows, metric) else f"{v:+.4f}"

    lines = [f"## Paired differences vs {name}\n",
             f"Each cell: the mean of (row − {name}) over the runs that differ from a {name} run only in "
             f"{what} (same seed, same other overrides); `[a, b]` its 95% interval over seeds (t, n − 1 df), "
             "`{a, b}` over the examples scored (paired bootstrap, the same resample for both runs). "
             "**\\*** the seed interval excludes 0, **†** the example interval does. Accuracy-type columns in "
             "percentage points; ↓: lower is better, so a negative difference is an improvement there.\n",
             "| | n | " + " | ".join(header(m, columns) for m in columns) + " |",
             "|:--|--:|" + "--:|" * len(columns)]
    for label, matched in pairs.items():
        cells, n = [], 0
        for metric in columns:
            d = paired_difference(matched, metric)
            if d is None:
                cells.append("—")
                continue
            n = max(n, d["n"])
            text = fmt(d["mean"], metric)
            if d["seeds"] is not None:
                lo, hi = (fmt(v, metric) for v in d["seeds"])
                text += f" [{lo}, {hi}]" + ("\\*" if excludes_zero(d["seeds"]) else "")
            if d["examples"] is not None:
                lo, hi = (fmt(v, metric) for v in d["examples"])
                text += f" {{{lo}, {hi}}}" + ("†" if excludes_zero(d["examples"]) else "")
            cells.append(text)
        lines.append(f"| {names.get(label, label)} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------ plot


def pareto_front(points: dict[str, tuple[float, float]]) -> list[str]:
    """Labels whose (x, y) no other point matches or beats on both axes (higher is better), sorted by x."""
    def dominated(p):
        return any(q[0] >= p[0] and q[1] >= p[1] and q != p for q in points.values())

    return sorted((label for label, p in points.items() if not dominated(p)), key=lambda k: points[k])


def frontier_axes(rows: list[dict]) -> tuple[Optional[str], list[str]]:
    """(x, [y, ...]) of the learning-vs-forgetting plot: x = the first higher-is-better downstream metric (else the
    first downstream one); one y per forgetting measure the rows have — the pre-existing average (else each
    pre-existing score), then each lower-is-better ``pre/`` metric (held-out losses per corpus, KL; a ``…/loss`` whose
    ``…/kl`` is there too is the same measure plus the samples' entropy, left out)."""
    columns = default_columns(rows)
    down = [m for m in columns if m.startswith("down/")]
    x = next((m for m in down if not lower_is_better(m)), None) or next(iter(down), None)
    pre = [m for m in columns if m.startswith("pre/")]
    scores = [AVG] if AVG in pre else [m for m in pre if not lower_is_better(m)]
    losses = [m for m in pre if lower_is_better(m) and not (m.endswith("/loss") and m[:-len("loss")] + "kl" in pre)]
    return x, scores + losses


def _crowded(points: Sequence[tuple[float, float]], most: int = 8, gap: float = 0.06) -> bool:
    """Whether labels written beside these points would collide: more than ``most`` of them, or two closer than
    ``gap`` of the panel's extent on both axes."""
    if len(points) > most:
        return True
    spans = [max(v) - min(v) or 1.0 for v in zip(*points)] if points else []
    return any(all(abs(a - b) < gap * span for a, b, span in zip(p, q, spans))
               for i, p in enumerate(points) for q in points[i + 1:])


def _grid(n: int, cols: int = 3):
    import matplotlib.pyplot as plt

    ncols = min(n, cols)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.3 * ncols, 3.6 * nrows), dpi=100, squeeze=False)
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def plot_frontier(rows: list[dict], path: str | os.PathLike, title: str = DEFAULT_TITLE,
                  runs: Sequence[dict] = ()) -> Optional[str]:
    """Downstream score (x) against each forgetting measure the rows have (:func:`frontier_axes`), one panel each,
    each panel's Pareto front as a step line; one look per row (:func:`series_styles`): with several base models in
    ``runs``, a colour per base and a marker per run on it (the same run the same marker on every base), else a
    colour per method and a marker per row. Labels are the rows' brief ones (:func:`brief_labels`), on the points
    when no panel is crowded (:func:`_crowded`) and the names are short, else in a legend: the bases' colours and
    the runs' markers apart, each named once.

    Writes nothing when nothing can be plotted, and returns why in one line; else None. A stale ``path`` from an
    earlier report is removed then, so that no empty or outdated plot stands beside the new report.
    """
    x_metric, y_metrics = frontier_axes(rows)
    panels = [(y, [r for r in rows if x_metric in r["mean"] and y in r["mean"]]) for y in y_metrics]
    panels = [(y, plotted) for y, plotted in panels if plotted]
    why = ("no downstream metric (down/...) in the runs" if x_metric is None else
           "no forgetting measure (pre/..., e.g. pre/avg, a held-out loss or KL) in the runs" if not y_metrics else
           f"no run has both {x_metric} and any of {', '.join(y_metrics)}" if not panels else None)
    if why is not None:
        Path(path).unlink(missing_ok=True)
        return why

    import matplotlib
    matplotlib.use("Agg")

    names, _ = brief_labels([r["label"] for r in rows])
    bases = {r["label"]: r.get("base_label", "default") for r in runs}
    several_bases = len({bases.get(r["label"], "default") for r in rows}) > 1
    if several_bases:
        family = {r["label"]: bases.get(r["label"], "default") for r in rows}
        variant = {label: without(label, base_items(base)) for label, base in family.items()}
    else:
        family = {r["label"]: split_label(r["label"])[0] for r in rows}
        variant = {r["label"]: r["label"] for r in rows}
    looks = series_styles([(family[r["label"]], variant[r["label"]]) for r in rows], points=True,
                          shared=several_bases)
    look = {r["label"]: looks[(family[r["label"]], variant[r["label"]])] for r in rows}
    x_scale = 100.0 if is_percent(rows, x_metric) else 1.0
    x_sign = -1.0 if lower_is_better(x_metric) else 1.0  # the front: the best of both, whichever way each points
    drawn = [r["label"] for r in rows if any(r in plotted for _, plotted in panels)]
    annotate = not any(_crowded([(r["mean"][x_metric], r["mean"][y]) for r in plotted]) for y, plotted in panels) \
        and max(len(names[label]) for label in drawn) <= 24

    fig, axes = _grid(len(panels))
    fronts = 0
    for ax, (y_metric, plotted) in zip(axes, panels):
        y_scale = 100.0 if is_percent(rows, y_metric) else 1.0
        sign = -1.0 if lower_is_better(y_metric) else 1.0
        points = {r["label"]: (r["mean"][x_metric] * x_scale, r["mean"][y_metric] * y_scale) for r in plotted}
        for row in plotted:
            label = row["label"]
            (x, y), std = points[label], row["std"]
            dx, dy = std.get(x_metric), std.get(y_metric)
            bars = ax.errorbar(x, y, xerr=None if dx is None else dx * x_scale,
                               yerr=None if dy is None else dy * y_scale, capsize=3, markersize=7,
                               label=names[label], **look[label])
            bars.lines[0].set_gid(f"series:{label}")
            if annotate:
                ax.annotate(names[label], (x, y), textcoords="offset points", xytext=(6, 5), fontsize=8)
        front = pareto_front({k: (x_sign * px, sign * py) for k, (px, py) in points.items()})
        if len(front) > 1:
            # steps-pre traces the edge of the dominated region: left of each front point, the best reachable
            # value is that point's.
            fx, fy = zip(*(points[k] for k in front))
            ax.plot(fx, fy, drawstyle="steps-pre", linestyle="--", color="0.45", alpha=0.7, gid="front",
                    label="_front")
            fronts += 1
        unit = " (%)" if y_scale == 100.0 else ""
        ax.set_ylabel(("pre-existing average" if y_metric == AVG else header(y_metric)).replace(" ↓", "") + unit +
                      (" ↓" if sign < 0 else " ↑"))
        ax.set_xlabel(f"downstream: {' '.join(x_metric.split('/')[1:])}{' (%)' if x_scale == 100.0 else ''} "
                      f"{'↓' if lower_is_better(x_metric) else '↑'}")
        ax.margins(0.12)  # room for the point labels at the edges
        ax.grid(alpha=0.3)
    fig.suptitle(title + ("  (dashed: Pareto front)" if fronts else ""))
    if not annotate:
        from matplotlib.lines import Line2D

        def handle(**style):
            return Line2D([], [], markersize=7, **{"linestyle": "none", **style})

        if several_bases:  # colours name the bases, markers the runs: each once
            colours = {family[label]: look[label]["color"] for label in drawn}
            kinds = {variant[label]: {k: v for k, v in look[label].items() if k != "color"} for label in drawn}
            shown, _ = brief_labels(list(kinds))
            fig.legend([handle(color=c, marker="s") for c in colours.values()], list(colours), title="base (colour)",
                       loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7, title_fontsize=8, frameon=False)
            fig.legend([handle(color="0.35", **k) for k in kinds.values()], [shown[v] for v in kinds],
                       title="run (marker)", loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=min(len(kinds), 6),
                       fontsize=7, title_fontsize=8, frameon=False)
        else:  # one entry per row, family by family as the colours were given
            order = list(dict.fromkeys(family.values()))
            labels = sorted(drawn, key=lambda label: order.index(family[label]))
            fig.legend([handle(**look[label]) for label in labels], [names[label] for label in labels],
                       loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7, frameon=False)
    fig.tight_layout()
    save_png(fig, path, bbox_inches="tight")
    return None


# ----------------------------------------------------------------------------------------------- files


def write_report(paths: Sequence[str | os.PathLike], out_dir: Optional[str | os.PathLike] = None, *,
                 title: str = DEFAULT_TITLE, order: Optional[Sequence[str]] = None,
                 reference: Optional[str] = None, reference_base: Optional[str] = None) -> str:
    """Write report.md, report.csv and frontier.png into ``out_dir``; return the Markdown. ``reference_base``: the
    base the learning–forgetting comparison measures "% less forgetting" against (``forgetting.frontier``)."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    runs = collect(paths)
    if not runs:
        raise NoResults(f"no readable results.json under {', '.join(map(str, paths))}")
    out = Path(out_dir) if out_dir is not None else _default_out(paths[0])
    out.mkdir(parents=True, exist_ok=True)

    rows = aggregate(runs, order)
    columns = default_columns(rows)

    _, shared = brief_labels([row["label"] for row in rows])
    shared_line = (f" Left out of the row labels (no row differs in them; full overrides in each results.json): "
                   f"{', '.join(f'`{item}`' for item in shared)}." if shared else "")
    markdown = (f"# {title}\n\n{to_markdown(rows, columns)}\n{_caption(rows, columns)}{shared_line}\n\n"
                f"{len(runs)} runs from {', '.join(map(str, paths))}\n")

    for extra in (paired_section(rows, runs, columns, reference), section(runs, out, reference_base),
                  recycling(runs, out)):
        if extra:
            markdown += "\n" + extra
    not_drawn = plot_frontier(rows, out / "frontier.png", title, runs)
    if not_drawn:
        markdown += f"\nNo frontier.png: {not_drawn}.\n"
    atomic_write(out / "report.md", lambda f: f.write(markdown))
    atomic_write(out / "report.csv", lambda f: f.write(to_csv(rows, columns)))
    return markdown


def _default_out(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path.parent if path.is_file() else path


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m forgetting.report", description=__doc__.splitlines()[0])
    parser.add_argument("sweeps", nargs="+", help="sweep directories (searched recursively) or results.json files")
    parser.add_argument("--out", help="output directory (default: the first sweep directory)")
    parser.add_argument("--title", default=DEFAULT_TITLE)
    parser.add_argument("--order", help="comma-separated row order, e.g. Base,FT,CFS")
    parser.add_argument("--reference", help="what paired differences are taken against: a method, a row as the table "
                                            "names it (CFS), or an override the runs carry (pretrain=adamw: the other "
                                            "bases against it, all else matched) (default: ft)")
    parser.add_argument("--reference-base", help="the base the learning-forgetting comparison is measured against: "
                                                 "a base label or one of its overrides, e.g. model.midtrain.rho=0.0 "
                                                 "(default: the base named default, else the first by name)")
    args = parser.parse_args(argv)

    order = [s.strip() for s in args.order.split(",") if s.strip()] if args.order else None
    try:
        markdown = write_report(args.sweeps, args.out, title=args.title, order=order, reference=args.reference,
                                reference_base=args.reference_base)
    except NoResults as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else _default_out(args.sweeps[0])
    print(markdown)
    for name in ("report.md", "report.csv", "frontier.png"):
        if (out / name).exists():
            print(f"wrote {out / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
