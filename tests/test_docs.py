"""The code's references point at things that exist: test files its docstrings cite, and no documents outside the
project.

    pytest tests/test_docs.py
"""
from __future__ import annotations

import re

from conftest import ROOT

SOURCES = [*ROOT.glob("forgetting/**/*.py"), *ROOT.glob("bench/*.py"), *ROOT.glob("conf/**/*.yaml"),
           ROOT / "launch.py", ROOT / "Makefile"]


def test_cited_test_files_exist():
    cited = {(p.relative_to(ROOT), m) for p in SOURCES for m in re.findall(r"tests/[\w/]+\.py", p.read_text())}
    assert cited and not [(str(p), m) for p, m in cited if not (ROOT / m).exists()]


def test_no_reference_to_documents_outside_the_project():
    assert not [str(p.relative_to(ROOT)) for p in SOURCES if "DESIGN.md" in p.read_text()]
