"""Report sections for recycling across versions (paper 004): the source × target table of recycled models, and
convergence — each run's downstream loss per training step (``trainer.snapshot_steps``) with the speed-up of a
recycled start: the steps plain fine-tuning needs to reach its final downstream loss ÷ the steps the recycled run
needs to reach that loss.

    python launch.py -m +experiment=recycle_versions       # writes convergence.png and these tables into report.md
    pytest tests/test_convergence.py
"""
from __future__ import annotations

import os
import re
import statistics
from pathlib import Path
from typing import Optional

from forgetting.intervals import match_key
from forgetting.plots import base_items, brief_labels, save_png, series_styles, split_label, without

CURVE = re.compile(r"^curve/(\d+)/down_loss$")
MAX_PANEL = 6  # lines one panel holds before the plot turns into small multiples, one panel per target


def source_of(run: dict) -> Optional[str]:
    """The ``method.recycle_from`` a run was given (its source versions), if any."""
    for o in run.get("overrides", []):
        key, _, value = o.lstrip("+~").partition("=")
        if key == "method.recycle_from":
            return value
    return None


def curve(run: dict) -> list[tuple[int, float]]:
    return sorted((int(m.group(1)), v) for k, v in run["metrics"].items() if (m := CURVE.match(k)))


def steps_to(points: list[tuple[int, float]], target: float) -> Optional[int]:
    """The first step whose downstream loss is ≤ ``target``."""
    return next((s for s, v in points if v <= target), None)


def speedups(runs: list[dict]) -> list[dict]:
    """Per target base and run: the steps plain FT needs to reach its final downstream loss, and the steps the run
    needs to reach that loss — against the FT run of the same target with the same seed and everything else but the
    method equal (``forgetting.intervals.match_key``: the same lr, the same schedule), never another FT run."""

    out = []
    for base in dict.fromkeys(r.get("base_label", "default") for r in runs):
        mine = [r for r in runs if r.get("base_label", "default") == base and curve(r)]
        fts = {}
        for r in mine:
            if r.get("method") == "ft":
                fts.setdefault(match_key(r), []).append(r)
        for r in mine:
            if r.get("method") == "ft":
                continue
            ft = fts.get(match_key(r), [])
            if len(ft) != 1:  # no FT run like it (or an ambiguous pair): no speed-up to report
                continue
            ft_curve = curve(ft[0])
            final = ft_curve[-1][1]
            ft_steps = steps_to(ft_curve, final)
            n = steps_to(curve(r), final)
            out.append({"target": base, "run": r["label"], "seed": r.get("seed"), "ft_steps": ft_steps, "steps": n,
                        "speedup": ft_steps / n if n else None})
    return out


def pivot(runs: list[dict], metric: str) -> tuple[list[str], list[str], dict]:
    """Recycled models that were not fine-tuned: source (rows) × target (columns) → mean ``metric``."""
    cells: dict[tuple[str, str], list[float]] = {}
    for r in runs:
        src = source_of(r)
        if src is None or r.get("method") != "recycle" or curve(r) or metric not in r["metrics"]:
            continue
        cells.setdefault((src, r.get("base_label", "default")), []).append(r["metrics"][metric])
    rows = list(dict.fromkeys(s for s, _ in cells))
    cols = list(dict.fromkeys(t for _, t in cells))
    return rows, cols, {k: statistics.mean(v) for k, v in cells.items()}


def series(runs: list[dict]) -> list[dict]:
    """One convergence curve per (target, label): the mean over its seeds at the steps every seed has, as
    ``{"target", "label", "method", "points"}``, in sweep order."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in runs:
        if curve(r):
            groups.setdefault((r.get("base_label", "default"), r["label"]), []).append(r)
    out = []
    for (target, label), members in groups.items():
        curves = [dict(curve(r)) for r in members]
        steps = sorted(set.intersection(*(set(c) for c in curves)))
        out.append({"target": target, "label": label, "method": members[0].get("method", ""),
                    "points": [(s, statistics.mean(c[s] for c in curves)) for s in steps]})
    return out


def plot(runs: list[dict], path: str | os.PathLike) -> None:
    """Downstream loss per step, one line per run label (seeds averaged). Up to ``MAX_PANEL`` lines: one panel, a
    colour per target. More, over several targets: small multiples, one panel per target (shared axes), a colour
    per method and a line style and marker per variant, the same look for the same start on every target; each
    legend names its runs without the target its panel's title names."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt


    lines = series(runs)
    targets = list(dict.fromkeys(s["target"] for s in lines))
    if len(targets) > 1 and len(lines) > MAX_PANEL:
        panels = {t: [s for s in lines if s["target"] == t] for t in targets}
        for s in lines:  # the panel's title names the target: its legend and look leave it out
            s["variant"], s["family"] = without(s["label"], base_items(s["target"])), split_label(s["label"])[0]
    else:
        panels = {None: lines}
        for s in lines:
            s["variant"], s["family"] = s["label"], s["target"] if len(targets) > 1 else split_label(s["label"])[0]
    looks = series_styles([(s["family"], s["variant"]) for s in lines])
    families = list(dict.fromkeys(s["family"] for s in lines))
    for target in panels:  # a panel lists its lines family by family, in the order their colours were given
        panels[target] = sorted(panels[target], key=lambda s: families.index(s["family"]))

    ncols = min(len(panels), 3)
    nrows = -(-len(panels) // ncols)
    size = (6.4, 4.8) if len(panels) == 1 else (4.3 * ncols, 3.4 * nrows)
    fig, axes = plt.subplots(nrows, ncols, figsize=size, dpi=100, squeeze=False, sharex=True, sharey=True)
    flat = list(axes.flat)
    for ax in flat[len(panels):]:
        ax.set_visible(False)
    # one name per look across the panels: what tells the figure's runs apart (the target left to the titles)
    names, _ = brief_labels([s["variant"] for s in lines])
    for ax, (target, mine) in zip(flat, panels.items()):
        for s in mine:
            ax.plot(*zip(*s["points"]), ms=4, lw=1.4, label=names[s["variant"]], gid=f"series:{s['label']}",
                    **looks[(s["family"], s["variant"])])
        if target is not None:
            ax.set_title(target, fontsize=10)
        ax.tick_params(labelbottom=True)
        ax.legend(fontsize=7 if target is None else 6)
        ax.grid(alpha=0.3)
    fig.supxlabel("fine-tuning step", fontsize=10)
    fig.supylabel("downstream loss ↓", fontsize=10)
    fig.suptitle("Convergence (recycled starts vs plain FT)" + ("" if None in panels else ", per target"))
    fig.tight_layout()
    save_png(fig, path)


def section(runs: list[dict], out_dir: Path) -> str:

    parts = []
    metric = next((m for r in runs for m in r["metrics"] if m.startswith("down/") and m.endswith("/exact_match")),
                  None)
    if metric:
        rows, cols, cells = pivot(runs, metric)
        if cells:
            lines = [f"## Recycled models: source × target (`{metric}`, no fine-tuning)\n",
                     "| source \\ target | " + " | ".join(cols) + " |", "|:--|" + "--:|" * len(cols)]
            for s in rows:
                lines.append(f"| {s} | " + " | ".join(f"{100 * cells[(s, t)]:.1f}" if (s, t) in cells else "—"
                                                      for t in cols) + " |")
            parts.append("\n".join(lines) + "\n")
    ups = speedups(runs)
    if ups:
        plot(runs, out_dir / "convergence.png")
        lines = ["## Convergence\n", "Steps to plain FT's final downstream loss on the same target, FT run with the "
                 "same seed and lr (from the snapshots, `trainer.snapshot_steps`; every point of a curve evaluated in "
                 "`model.dtype`).\n", "| target | run | seed | FT steps | run's steps | speed-up |",
                 "|:--|:--|--:|--:|--:|--:|"]
        shown = {u["run"]: without(u["run"], base_items(u["target"])) for u in ups}  # the target has its column
        names, _ = brief_labels(list(shown.values()))
        for u in ups:
            speed = "—" if u["speedup"] is None else f"{u['speedup']:.2f}×"
            lines.append(f"| {u['target']} | {names[shown[u['run']]]} | {u['seed']} | {u['ft_steps']} | "
                         f"{u['steps'] or 'not reached'} | {speed} |")
        parts.append("\n".join(lines) + "\n\n![convergence](convergence.png)\n")
    return "\n".join(parts)
