"""What the report's plots draw, read from the figures themselves: shared by tests/test_report.py,
tests/test_frontier.py and tests/test_convergence.py.

    figures = capture(monkeypatch); write_report([sweep]); looks = series_looks(figures["frontier.png"])
"""
from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path

from matplotlib.colors import to_hex
from matplotlib.figure import Figure


def _items(text: str) -> list[str]:
    """The override items of a label ``Name (a=1, b=[x, y])``, split at top-level commas (read here, not with the
    report's own parser, so that these checks hold the report to account rather than to itself)."""
    match = re.fullmatch(r".*? \((.*)\)", text)
    if not match:
        return []
    items, depth, current = [], 0, ""
    for ch in match.group(1):
        depth += (ch in "[{(") - (ch in "]})")
        if ch == "," and depth == 0:
            items.append(current.strip())
            current = ""
        else:
            current += ch
    return [*items, current.strip()]


def capture(monkeypatch) -> dict:
    """{file name: Figure} of every PNG written while the test runs (a closed figure stays readable). Read from what
    ``Figure.savefig`` is given, whatever writes it: a path, or a file (the report writes a temp file beside the PNG,
    ``.frontier.png.<random>.tmp``, opened from a descriptor: its name is the descriptor's link in /proc)."""
    figures: dict = {}
    real = Figure.savefig

    def savefig(self, fname, *args, **kwargs):
        name = getattr(fname, "name", fname)
        if isinstance(name, int):
            name = os.readlink(f"/proc/self/fd/{name}")
        name = Path(os.fspath(name)).name
        match = re.fullmatch(r"\.(.+\.png)\..*\.tmp", name)
        figures[match.group(1) if match else name] = self
        return real(self, fname, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", savefig)
    return figures


def panels(fig: Figure) -> list:
    return [ax for ax in fig.axes if ax.get_visible() and ax.get_label() != "<colorbar>"]


def series_looks(fig: Figure) -> list[dict]:
    """Per visible panel: {series name: (colour, line style, marker, fill)} of the lines the plot marks as series."""
    out = []
    for ax in panels(fig):
        lines = [line for line in ax.get_lines() if (line.get_gid() or "").startswith("series:")]
        if lines:
            names = [line.get_gid()[len("series:"):] for line in lines]
        else:  # a plot that marks no series: its labelled lines are
            lines = [line for line in ax.get_lines() if not line.get_label().startswith("_")]
            names = [line.get_label() for line in lines]
        out.append({name: (to_hex(line.get_color()), line.get_linestyle(), line.get_marker(), line.get_fillstyle())
                    for name, line in zip(names, lines)})
        assert len(out[-1]) == len(lines), f"two lines of one series in panel {ax.get_title()!r}"
    return out


def assert_distinct(fig: Figure) -> None:
    """No two series of a panel look alike."""
    for ax, looks in zip(panels(fig), series_looks(fig)):
        same = [look for look, k in Counter(looks.values()).items() if k > 1]
        assert not same, (ax.get_title(), [name for name, look in looks.items() if look in same])


def legend_texts(fig: Figure) -> list[list[str]]:
    legends = [ax.get_legend() for ax in panels(fig)] + list(fig.legends)
    return [[t.get_text() for t in legend.get_texts()] for legend in legends if legend is not None]


def assert_says_each_thing_once(fig: Figure) -> None:
    """Each legend names each entry once, no entry repeats an override or carries one its panel's title states,
    and no override is listed by every entry of a legend (it tells none of them apart)."""
    titles = {ax.get_legend(): ax.get_title() for ax in panels(fig)}
    legends = [ax.get_legend() for ax in panels(fig)] + list(fig.legends)
    for legend in (lg for lg in legends if lg is not None):
        texts = [t.get_text() for t in legend.get_texts()]
        assert len(set(texts)) == len(texts), texts
        for text in texts:
            assert "[" not in text.split(")")[-1], text  # no "[base]" suffix after the label
            items = _items(text)
            assert len({i.split("=")[0] for i in items}) == len(items), text
            title = titles.get(legend, "")
            assert not any(i in title for i in items), (text, title)
        if len(texts) > 1:
            assert not set.intersection(*(set(_items(t)) for t in texts)), texts
