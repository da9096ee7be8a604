"""What the report's plots and tables share: row labels that say what differs between the rows, a look per series that
no other series of the figure has, and atomic writes.

    pytest tests/test_report.py tests/test_frontier.py tests/test_convergence.py     # plots read back: tests/figures.py

Reads nothing and imports nothing of the project: ``forgetting.report``, ``forgetting.frontier`` and
``forgetting.convergence`` import it (docs/report.md).
"""
from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Sequence

# ---------------------------------------------------------------------------------------------- labels


LOWER_IS_BETTER_SUFFIXES = ("/loss", "/ppl", "/perplexity", "/kl", "/increase", "_loss", "/curvature")

# metric → higher is better, as the evaluators declared it in the runs read (results.json "metric_info")
DECLARED: dict[str, bool] = {}


def lower_is_better(metric: str) -> bool:
    """As its evaluator declared it (``metric_info``); for runs made before declarations, by its name's suffix."""
    if metric in DECLARED:
        return not DECLARED[metric]
    return metric.endswith(LOWER_IS_BETTER_SUFFIXES)


def declare(runs: list[dict]) -> None:
    """Take the metric directions the runs' evaluators declared."""
    for run in runs:
        for metric, info in (run.get("metric_info") or {}).items():
            if isinstance(info, dict) and isinstance(info.get("higher_is_better"), bool):
                DECLARED[metric] = info["higher_is_better"]


def split_label(label: str) -> tuple[str, list[str]]:
    """``"CFS (ratio=0.5, recycle_from=[v1,v2])"`` → ``("CFS", ["ratio=0.5", "recycle_from=[v1,v2]"])``: the
    name and its override items, split at top-level commas only (a value may hold brackets and commas)."""
    match = re.fullmatch(r"(.*?) \((.*)\)", label)
    if not match:
        return label, []
    items, depth, start, body = [], 0, 0, match.group(2)
    for i, ch in enumerate(body):
        if ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        elif ch == "," and depth == 0:
            items.append(body[start:i].strip())
            start = i + 1
    return match.group(1), [*items, body[start:].strip()]


def join_label(name: str, items: Sequence[str]) -> str:
    return f"{name} ({', '.join(items)})" if items else name


def without(label: str, items: Sequence[str]) -> str:
    """``label`` without the override items in ``items`` (e.g. the base's, when a panel title already names it)."""
    name, mine = split_label(label)
    drop = {i.strip() for i in items}
    return join_label(name, [i for i in mine if i not in drop])


def _key(item: str) -> str:
    return item.split("=", 1)[0]


def brief_labels(labels: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """Row labels that name what differs between the rows, briefly: ({label: brief}, the items left out).

    An override item whose key has one value wherever it appears (every row's ``limit=640``; FT's and CFS's
    ``lr=1e-4`` beside a Base row that does not train) tells no row from another: it is left out, unless that would
    make two rows read the same. A file path keeps only its file name when those stay distinct. The full overrides
    stay in each run's results.json."""
    parsed = {label: split_label(label) for label in dict.fromkeys(labels)}
    values: dict[str, set] = {}
    for _, items in parsed.values():
        for item in items:
            if "=" in item:  # an override; free text in a hand-set label stays as it is
                values.setdefault(_key(item), set()).add(item)
    dropped: set[str] = set()
    for seen in values.values():
        if len(seen) != 1:
            continue
        trial = dropped | seen
        shown = [join_label(name, [i for i in items if i not in trial]) for name, items in parsed.values()]
        if len(set(shown)) == len(shown):
            dropped = trial
    short = {}
    for key, seen in values.items():
        paths = {item: f"{key}={Path(item.split('=', 1)[1]).name}" for item in seen if "/" in item.split("=", 1)[1]}
        if paths and len(set(paths.values())) == len(paths):
            short.update(paths)
    out = {label: join_label(name, [short.get(i, i) for i in items if i not in dropped])
           for label, (name, items) in parsed.items()}
    left_out = [short.get(i, i) for i in dict.fromkeys(i for _, items in parsed.values() for i in items)
                if i in dropped]
    return out, left_out


# ---------------------------------------------------------------------------------------------- styles

# Filled markers that read apart at 5 px; line styles that read apart at 1.5 px.
MARKERS = ("o", "s", "^", "v", "D", "P", "X", "*", "h", "<", ">", "p")
LINESTYLES = ("-", "--", "-.", ":")


def series_styles(keys: Sequence[tuple[str, str]], points: bool = False,
                  shared: bool = False) -> dict[tuple[str, str], dict]:
    """A look per (family, variant), all different: one colour per family (tab10, tab20 past 10 families, a colour
    map past 20); a line style and marker per variant within its family (``points``: a marker, then an open or
    half-filled face, since a point has no line). ``shared``: a variant looks the same in every family, so that a
    legend can name the colours and the markers apart. Returns matplotlib keyword arguments per key."""
    import matplotlib

    families = list(dict.fromkeys(f for f, _ in keys))
    variants = list(dict.fromkeys(v for _, v in keys))
    n = len(families)
    if n <= 10:
        colours = [matplotlib.colors.to_hex(f"C{i}") for i in range(n)]
    elif n <= 20:
        colours = [matplotlib.colors.to_hex(c) for c in matplotlib.colormaps["tab20"].colors[:n]]
    else:
        colours = [matplotlib.colors.to_hex(matplotlib.colormaps["turbo"](i / (n - 1))) for i in range(n)]
    out, count = {}, dict.fromkeys(families, 0)
    for family, variant in dict.fromkeys(keys):
        i = variants.index(variant) if shared else count[family]
        count[family] += 1
        if points:
            marker, fill = MARKERS[i % len(MARKERS)], ("full", "none", "left", "right")[i // len(MARKERS) % 4]
            style = {"linestyle": "none", "marker": marker, "fillstyle": fill}
        else:  # 12 markers × 4 line styles: the line style shifts by one each time the markers come round: 48 looks
            style = {"linestyle": LINESTYLES[(i + i // len(MARKERS)) % len(LINESTYLES)],
                     "marker": MARKERS[i % len(MARKERS)], "fillstyle": "full"}
        out[(family, variant)] = {"color": colours[families.index(family)], **style}
    return out


def base_items(base_label: str) -> list[str]:
    """A run's base overrides as its label names them, by their last key: ``model.midtrain.rho=0.0`` → ``rho=0.0``."""
    return [f"{k.strip().split('.')[-1]}={v.strip()}" for k, _, v in (i.partition("=") for i in base_label.split(","))]


# ----------------------------------------------------------------------------------------------- files


def save_png(fig, path: str | os.PathLike, **savefig) -> None:
    """Write ``fig`` as a PNG atomically and close it."""
    import matplotlib.pyplot as plt

    atomic_write(Path(path), lambda fh: fig.savefig(fh, format="png", **savefig), binary=True)
    plt.close(fig)


def save_plot(fig, ax, path: str | os.PathLike, xlabel: str, ylabel: str, title: str, legend_size: int = 8) -> None:
    """Label, legend and grid ``ax``; write ``fig`` as a PNG atomically; close it."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=legend_size)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_png(fig, path)


def atomic_write(path: Path, write, binary: bool = False) -> None:
    # Temp file in the same directory so os.replace is a rename on one filesystem: a reader (or a crash)
    # sees the old file or the new one, never half of one.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp creates 0600; a report is meant to be shared like any file the user writes.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
