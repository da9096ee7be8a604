"""The learning–forgetting frontier across base models (paper 003 §2.1, App. B.3, C.4): each fine-tuning run of a base
is a point (x = its downstream loss, y = a forgetting measure); per base, its Pareto front; and the loss-matched
comparison: τ = the largest of the bases' best downstream losses, and per base the best y among its runs with
downstream loss ≤ τ, as forgetting (its change from that base's own y) and as "% less forgetting" than a reference base.

    python launch.py -m +experiment=sam_frontier          # writes lf_frontier*.png and these tables into report.md
    python -m forgetting.report outputs/olmo2_sam --reference-base model.midtrain.rho=0.0
    pytest tests/test_frontier.py

x is the loss on held-out rows of the fine-tuning task: ``down/<name>/val_loss`` (a dataset's validation rows) where
the runs have one, else ``down/<task>/loss`` (the toy task's test rows, a test split's answer loss). Every forgetting
measure the runs report is an axis of its own: ``pre/heldout/loss`` (the toy world's held-out documents), each
``pre/<corpus>/loss`` (held-out real text: ``eval.corpora``), both lower-is-better, and ``pre/avg`` (the benchmark
suite's average, higher-is-better: App. B.3 compares benchmark performance at a matched fine-tuning loss).
The reference base is stated in the report: ``--reference-base`` (a base's label, or one of its overrides), else the
base named "default", else the first base label in sorted order.
"""
from __future__ import annotations

import os
import statistics
from pathlib import Path
from typing import Optional

from forgetting.plots import lower_is_better, save_plot, series_styles

Y = "pre/heldout/loss"
AVG = "pre/avg"
NOT_FORGETTING = ("pre/base_samples/loss",)  # the base's own samples: KL-like, reported by the main table


def x_metric(runs: list[dict]) -> Optional[str]:
    """The learning axis the runs report: a validation loss (``down/<name>/val_loss``), else ``down/<task>/loss``."""
    found = [m for r in runs for m in r["metrics"] if m.startswith("down/")]
    return next((m for m in found if m.endswith("/val_loss")), None) or next(
        (m for m in found if m.endswith("/loss")), None)


def y_axes(runs: list[dict]) -> list[str]:
    """The forgetting axes the runs report, in order: ``pre/heldout/loss``, the other ``pre/*/loss``, ``pre/avg``."""
    seen = list(dict.fromkeys(m for r in runs for m in r["metrics"]))
    losses = [m for m in seen if m.startswith("pre/") and m.endswith("/loss") and m not in NOT_FORGETTING]
    return sorted(losses, key=lambda m: m != Y) + ([AVG] if AVG in seen else [])


def higher_is_better(y: str) -> bool:
    return not lower_is_better(y)


def base_name(run: dict) -> str:
    """The run's base label with its overrides in sorted order: the same base whatever order they were typed in."""
    return ", ".join(sorted(p.strip() for p in run.get("base_label", "default").split(",")))


def points(runs: list[dict], x: str, y: str = Y) -> dict[str, dict]:
    """curve → {"runs": {label: (x, y)} (means over seeds), "base": the base model's own y}. A curve is a base's FT
    runs ("pretrain=sam"), or another method's runs on it ("pretrain=sam · ewc"): methods are not mixed."""
    bases: dict[str, list] = {}
    curves: dict[str, tuple[str, dict]] = {}
    for r in runs:
        base, m = base_name(r), r["metrics"]
        if r.get("method") == "base":
            if y in m:
                bases.setdefault(base, []).append(m[y])
        elif x in m and y in m:
            name = base if r.get("method", "ft") == "ft" else f"{base} · {r['method']}"
            curves.setdefault(name, (base, {}))[1].setdefault(r["label"], []).append((m[x], m[y]))
    return {name: {"runs": {label: (statistics.mean(p[0] for p in ps), statistics.mean(p[1] for p in ps))
                            for label, ps in pts.items()},
                   "base": statistics.mean(bases[base]) if base in bases else None}
            for name, (base, pts) in curves.items()}


def pareto_lower(pts: dict[str, tuple[float, float]], higher_y: bool = False) -> list[str]:
    """Labels no other point matches or beats on both axes (x lower-better; y lower-better unless ``higher_y``),
    sorted by x."""
    sign = -1 if higher_y else 1

    def dominated(p):
        return any(q[0] <= p[0] and sign * q[1] <= sign * p[1] and q != p for q in pts.values())

    return sorted((k for k, p in pts.items() if not dominated(p)), key=lambda k: pts[k])


def reference_of(names: list[str], requested: Optional[str] = None) -> tuple[str, str]:
    """(the reference curve, why it is the one): ``requested`` — a curve's name, or an override that exactly one
    curve's base carries (``model.midtrain.rho=0.0``) — else "default", else the first name in sorted order."""
    if requested is not None:
        if requested in names:
            return requested, "--reference-base"
        matches = [n for n in names if " · " not in n and requested in (p.strip() for p in n.split(","))]
        if len(matches) != 1:
            raise ValueError(f"--reference-base={requested!r} is invalid: expected a base of the runs "
                             f"({', '.join(sorted(names))}) or an override exactly one of them carries")
        return matches[0], "--reference-base"
    if "default" in names:
        return "default", 'the base named "default"'
    return sorted(names)[0], "the first base in sorted order: --reference-base names another"


def loss_matched(per_base: dict[str, dict], reference: Optional[str] = None, higher: bool = False) -> dict:
    """τ (and the base whose best downstream loss sets it), and per base: its best downstream loss, the best y among
    runs with x ≤ τ, the forgetting there (its change from the base's own y, the worse way: a rise of a loss, a drop
    of a score) and the % less forgetting than the reference (:func:`reference_of`); with ``higher`` (a score), also
    the drop from the reference base's own score, paper 003 §3.5.1's measure at 1B ("relative to 43.2")."""
    best = {base: min(x for x, _ in b["runs"].values()) for base, b in per_base.items()}
    tau_from = max(best, key=best.get)
    tau = best[tau_from]
    worse = (lambda y, base_y: base_y - y) if higher else (lambda y, base_y: y - base_y)
    ref, why = reference_of(list(per_base), reference)
    ref_base = per_base[ref]["base"]
    rows = {}
    for base, b in per_base.items():
        ys = [y for x, y in b["runs"].values() if x <= tau]
        y = max(ys) if higher else min(ys)
        rows[base] = {"best_x": best[base], "y_at_tau": y, "base_y": b["base"],
                      "forgetting": None if b["base"] is None else worse(y, b["base"]),
                      "from_reference": None if ref_base is None else worse(y, ref_base)}
    for key, pct in (("forgetting", "less_forgetting_pct"), ("from_reference", "less_from_reference_pct")):
        f_ref = rows[ref][key]
        for r in rows.values():
            ok = f_ref is not None and r[key] is not None and f_ref > 0
            r[pct] = 100.0 * (1 - r[key] / f_ref) if ok else None
    return {"tau": tau, "tau_from": tau_from, "reference": ref, "reference_why": why, "higher": higher, "rows": rows}


def _name(y: str) -> str:
    return "Avg." if y == AVG else "held-out loss" if y == Y else f"{y.split('/')[1]} loss"


def to_markdown(x: str, table: dict, y: str = Y) -> str:
    higher = table["higher"]
    scale, fmt, dfmt = (100.0, "{:.2f}", "{:+.2f}") if higher else (1.0, "{:.3f}", "{:+.3f}")

    def f(v, form="{:.3f}", k=1.0):
        return "—" if v is None else form.format(v * k)

    best = "; ".join(f"`{b}`: {r['best_x']:.3f}" for b, r in table["rows"].items())
    word, change = ("highest", "the base's own minus that (its drop, in points)") if higher else \
        ("lowest", "that minus the base's own (its rise)")
    lines = [f"### Forgetting as `{y}` ({'higher' if higher else 'lower'} is better)\n",
             f"x = `{x}` (learning, lower is better). τ = {table['tau']:.3f}: the largest of the bases' best "
             f"downstream losses ({best}), set by `{table['tau_from']}`. Per base, the {word} `{y}` among its runs "
             f"with downstream loss ≤ τ; forgetting = {change}; % less forgetting than the reference base "
             f"`{table['reference']}` ({table['reference_why']}).\n"]
    head = f"| base | best downstream loss | base {_name(y)} | {_name(y)} at τ | forgetting at τ | less forgetting |"
    rule = "|:--|--:|--:|--:|--:|--:|"
    if higher:
        head += " drop from the reference base | less forgetting (§3.5.1) |"
        rule += "--:|--:|"
    lines += [head, rule]
    for base, r in table["rows"].items():
        line = (f"| {base} | {f(r['best_x'])} | {f(r['base_y'], fmt, scale)} | {f(r['y_at_tau'], fmt, scale)} | "
                f"{f(r['forgetting'], dfmt, scale)} | {f(r['less_forgetting_pct'], '{:.0f}%')} |")
        if higher:
            line += f" {f(r['from_reference'], dfmt, scale)} | {f(r['less_from_reference_pct'], '{:.0f}%')} |"
        lines.append(line)
    if higher:
        lines.append(f"\nThe last two columns measure every base's drop from `{table['reference']}`'s own score, as "
                     "paper 003 §3.5.1 reports its 1B results (\"relative to 43.2\", the AdamW base's average).")
    return "\n".join(lines) + "\n"


def plot(per_base: dict[str, dict], x: str, path: str | os.PathLike, y: str = Y) -> None:
    """Each curve's runs (faint) and Pareto front (line); a base's curves (its FT, another method on it: ``name ·
    method``) share its colour and differ by line style and marker; each base's own y as a dotted line, once."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt


    higher = higher_is_better(y)
    base_of = {name: name.split(" · ")[0] for name in per_base}
    looks = series_styles([(base_of[name], name) for name in per_base])
    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=100)
    drawn_bases = set()
    for name, b in per_base.items():
        look = looks[(base_of[name], name)]
        pts = b["runs"]
        ax.scatter(*zip(*pts.values()), color=look["color"], marker=look["marker"], alpha=0.35, s=18)
        front = pareto_lower(pts, higher)
        ax.plot(*zip(*(pts[k] for k in front)), label=name, gid=f"series:{name}", **look)
        if b["base"] is not None and base_of[name] not in drawn_bases:
            drawn_bases.add(base_of[name])
            ax.axhline(b["base"], color=look["color"], linestyle=":", alpha=0.6, gid="base")
    save_plot(fig, ax, path, f"downstream loss ({x.split('/')[1]}) ↓", f"{y} {'↑' if higher else '↓'}",
              "Learning–forgetting frontier per base (dotted: the base itself)")


def per_seed(runs: list[dict], x: str, reference: str, y: str = Y) -> dict:
    """With several seeds: the loss-matched comparison on each seed's runs alone (its own τ), as
    {seed: loss_matched table}; a seed missing the reference or a base model is left out; {} unless two remain."""
    seeds = sorted({r["seed"] for r in runs if r.get("seed") is not None})
    out = {}
    for seed in seeds if len(seeds) > 1 else []:
        mine = points([r for r in runs if r.get("seed") == seed], x, y)
        if reference in mine and all(b["base"] is not None for b in mine.values()):
            out[seed] = loss_matched(mine, reference, higher_is_better(y))
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


def section(runs: list[dict], out_dir: Path, reference: Optional[str] = None) -> str:
    """The report's section when the runs carry a downstream loss: one loss-matched table (and plot: ``lf_frontier.png``
    for the first axis, ``lf_frontier_<axis>.png`` for the others) per forgetting axis; else ""."""
    x = x_metric(runs)
    parts = []
    for y in y_axes(runs) if x else []:
        per_base = points(runs, x, y)
        if not per_base:
            continue
        png = "lf_frontier.png" if not parts else f"lf_frontier_{y.split('/')[1]}.png"
        plot(per_base, x, out_dir / png, y)
        table = loss_matched(per_base, reference, higher_is_better(y))
        parts.append(to_markdown(x, table, y) + seeds_markdown(per_seed(runs, x, table["reference"], y),
                                                               list(table["rows"]))
                     + f"\n![learning–forgetting frontier, {y}]({png})\n")
    if not parts:
        return ""
    return "## Learning–forgetting across bases (paper 003)\n\n" + "\n".join(parts)
