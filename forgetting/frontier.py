"""The learning–forgetting frontier across base models (paper 003 §2.1, App. C.4): each fine-tuning run of a base
is a point (x = downstream loss, y = held-out pretraining loss, both lower-better); per base, its Pareto front; and
the loss-matched comparison: τ = the largest of the bases' best downstream losses, and per base the lowest held-out
loss among its runs with downstream loss ≤ τ, as forgetting (the rise over that base's own held-out loss) and as
"% less forgetting" than a reference base.

    python launch.py -m +experiment=sam_frontier          # writes lf_frontier.png and this table into report.md
    pytest tests/test_frontier.py
"""
from __future__ import annotations

import os
import statistics
from pathlib import Path
from typing import Optional

Y = "pre/heldout/loss"


def x_metric(runs: list[dict]) -> Optional[str]:
    """The downstream loss the runs report (``down/<task>/loss``), if any."""
    return next((m for r in runs for m in r["metrics"] if m.startswith("down/") and m.endswith("/loss")), None)


def points(runs: list[dict], x: str) -> dict[str, dict]:
    """curve → {"runs": {label: (x, y)} (means over seeds), "base": the base model's own held-out loss}. A curve is a
    base's FT runs ("pretrain=sam"), or another method's runs on it ("pretrain=sam · ewc"): methods are not mixed."""
    bases: dict[str, list] = {}
    curves: dict[str, tuple[str, dict]] = {}
    for r in runs:
        base, m = r.get("base_label", "default"), r["metrics"]
        if r.get("method") == "base":
            if Y in m:
                bases.setdefault(base, []).append(m[Y])
        elif x in m and Y in m:
            name = base if r.get("method", "ft") == "ft" else f"{base} · {r['method']}"
            curves.setdefault(name, (base, {}))[1].setdefault(r["label"], []).append((m[x], m[Y]))
    return {name: {"runs": {label: (statistics.mean(p[0] for p in ps), statistics.mean(p[1] for p in ps))
                            for label, ps in pts.items()},
                   "base": statistics.mean(bases[base]) if base in bases else None}
            for name, (base, pts) in curves.items()}


def pareto_lower(pts: dict[str, tuple[float, float]]) -> list[str]:
    """Labels no other point matches or beats on both axes (lower is better), sorted by x."""
    def dominated(p):
        return any(q[0] <= p[0] and q[1] <= p[1] and q != p for q in pts.values())

    return sorted((k for k, p in pts.items() if not dominated(p)), key=lambda k: pts[k])


def loss_matched(per_base: dict[str, dict], reference: Optional[str] = None) -> dict:
    """τ, and per base: its best downstream loss, the lowest held-out loss among runs with x ≤ τ, the forgetting
    there (minus the base's own held-out loss, when known) and the % less forgetting than ``reference`` (default:
    the base named "default", else the first)."""
    tau = max(min(x for x, _ in b["runs"].values()) for b in per_base.values())
    rows = {}
    for base, b in per_base.items():
        y = min(y for x, y in b["runs"].values() if x <= tau)
        rows[base] = {"best_x": min(x for x, _ in b["runs"].values()), "y_at_tau": y, "base_y": b["base"],
                      "forgetting": None if b["base"] is None else y - b["base"]}
    ref = reference or ("default" if "default" in rows else next(iter(rows)))
    f_ref = rows[ref]["forgetting"]
    for r in rows.values():
        ok = f_ref is not None and r["forgetting"] is not None and f_ref > 0
        r["less_forgetting_pct"] = 100.0 * (1 - r["forgetting"] / f_ref) if ok else None
    return {"tau": tau, "reference": ref, "rows": rows}


def to_markdown(x: str, table: dict) -> str:
    def f(v, fmt="{:.3f}"):
        return "—" if v is None else fmt.format(v)

    lines = ["## Learning–forgetting across bases (paper 003)\n",
             f"x = `{x}` (learning), y = `{Y}` (forgetting), both lower-better. Loss-matched at τ = {table['tau']:.3f} "
             "(the largest of the bases' best downstream losses): per base, the lowest held-out loss among its runs "
             f"with downstream loss ≤ τ; forgetting = that minus the base's own; % vs `{table['reference']}`.\n",
             "| base | best downstream loss | base held-out loss | held-out loss at τ | forgetting at τ | "
             "less forgetting |", "|:--|--:|--:|--:|--:|--:|"]
    for base, r in table["rows"].items():
        lines.append(f"| {base} | {f(r['best_x'])} | {f(r['base_y'])} | {f(r['y_at_tau'])} | "
                     f"{f(r['forgetting'], '{:+.3f}')} | {f(r['less_forgetting_pct'], '{:.0f}%')} |")
    return "\n".join(lines) + "\n"


def plot(per_base: dict[str, dict], x: str, path: str | os.PathLike) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from forgetting.report import save_plot

    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=120)
    for i, (base, b) in enumerate(per_base.items()):
        pts = b["runs"]
        ax.scatter(*zip(*pts.values()), color=f"C{i}", alpha=0.5, s=18)
        front = pareto_lower(pts)
        ax.plot(*zip(*(pts[k] for k in front)), color=f"C{i}", marker="o", label=base)
        if b["base"] is not None:
            ax.axhline(b["base"], color=f"C{i}", linestyle=":", alpha=0.6)
    save_plot(fig, ax, path, f"downstream loss ({x.split('/')[1]}) ↓", "held-out pretraining loss ↓",
              "Learning–forgetting frontier per base (dotted: the base itself)")


def per_seed(runs: list[dict], x: str, reference: str) -> dict:
    """With several seeds: the loss-matched comparison on each seed's runs alone (its own τ), as
    {seed: loss_matched table}; a seed missing the reference or a base model is left out; {} unless two remain."""
    seeds = sorted({r["seed"] for r in runs if r.get("seed") is not None})
    out = {}
    for seed in seeds if len(seeds) > 1 else []:
        mine = points([r for r in runs if r.get("seed") == seed], x)
        if reference in mine and all(b["base"] is not None for b in mine.values()):
            out[seed] = loss_matched(mine, reference)
    return out if len(out) > 1 else {}


def seeds_markdown(tables: dict, bases: list[str]) -> str:
    """Each seed's τ and % less forgetting per base, and their mean ± sample std."""
    if not tables:
        return ""
    head = " | ".join(f"seed {s} (τ {t['tau']:.3f})" for s, t in tables.items())
    lines = ["\nPer seed (each seed's runs and base alone, at its own τ): % less forgetting than "
             f"`{next(iter(tables.values()))['reference']}`.\n", f"| base | {head} | mean ± std |",
             "|:--|" + "--:|" * (len(tables) + 1)]
    for base in bases:
        vals = [t["rows"][base]["less_forgetting_pct"] if base in t["rows"] else None for t in tables.values()]
        got = [v for v in vals if v is not None]
        summary = (f"{statistics.mean(got):.0f}% ± {statistics.stdev(got):.0f}" if len(got) > 1 else "—")
        lines.append(f"| {base} | " + " | ".join("—" if v is None else f"{v:.0f}%" for v in vals) + f" | {summary} |")
    return "\n".join(lines) + "\n"


def section(runs: list[dict], out_dir: Path) -> str:
    """The report's section (and ``lf_frontier.png``) when the runs carry a downstream loss; else ""."""
    x = x_metric(runs)
    per_base = points(runs, x) if x else {}
    if not per_base:
        return ""
    plot(per_base, x, out_dir / "lf_frontier.png")
    table = loss_matched(per_base)
    return (to_markdown(x, table) + seeds_markdown(per_seed(runs, x, table["reference"]), list(table["rows"]))
            + "\n![learning–forgetting frontier](lf_frontier.png)\n")
