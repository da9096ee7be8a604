"""The documentation holds together: the site builds in strict mode (every page in the nav, no broken link or
anchor), the README's links land on pages and headings that exist, and the code's references point at things that
exist: test files its docstrings and the docs cite, docs pages it names, and no documents outside the project.

    pytest tests/test_docs.py
"""
from __future__ import annotations

import re
import subprocess
import sys

from conftest import ROOT

SOURCES = [*ROOT.glob("forgetting/**/*.py"), *ROOT.glob("bench/*.py"), *ROOT.glob("conf/**/*.yaml"),
           ROOT / "launch.py", ROOT / "Makefile"]
DOCS = [ROOT / "README.md", *ROOT.glob("docs/**/*.md")]


def test_cited_test_files_exist():
    cited = {(p.relative_to(ROOT), m) for p in SOURCES + DOCS for m in re.findall(r"tests/[\w/]+\.py", p.read_text())}
    assert cited and not [(str(p), m) for p, m in cited if not (ROOT / m).exists()]


def test_cited_docs_pages_exist():
    pattern = r"docs/[\w/.-]+?\.(?:md|yaml|png)"
    cited = {(p.relative_to(ROOT), m) for p in SOURCES for m in re.findall(pattern, p.read_text())}
    assert cited and not [(str(p), m) for p, m in cited if "<" not in m and not (ROOT / m).exists()]


def test_no_reference_to_documents_outside_the_project():
    assert not [str(p.relative_to(ROOT)) for p in SOURCES if "DESIGN.md" in p.read_text()]


def test_code_points_at_docs_not_at_readme_sections():
    """The README is a front page; what code comments cite lives in docs/ (README sections move, pages stay)."""
    cites = [(str(p.relative_to(ROOT)), line) for p in SOURCES for line in p.read_text().splitlines()
             if "README" in line and "peft" not in line]  # peft writes a README.md model card beside an adapter
    assert not cites


def test_configuration_page_lists_every_option():
    """docs/configuration.md's table of config groups names every yaml of conf/, in its group's row."""
    page = (ROOT / "docs" / "configuration.md").read_text()
    rows = dict(re.findall(r"^\| `([\w/]+)` \| (.*?) \|", page, flags=re.M))
    missing = [str(y.relative_to(ROOT)) for y in (ROOT / "conf").glob("*/**/*.yaml")
               if f"`{y.stem}`" not in rows.get(str(y.parent.relative_to(ROOT / "conf")), "")]
    assert rows and not missing


def _anchors(page) -> set[str]:
    """The ids MkDocs gives a page's headings (its toc extension's slugify over the heading's text)."""
    from markdown.extensions.toc import slugify

    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return {slugify(re.sub(r"[`*]", "", h), "-") for h in re.findall(r"^#{1,6} +(.+?) *$", text, flags=re.M)}


def test_readme_links_resolve():
    """The README is outside the site, so the strict build does not see its links: every relative link must name a
    file of the project, and an anchor into a docs page one of that page's headings."""
    links = re.findall(r"\]\(([^)\s]+)\)", (ROOT / "README.md").read_text())
    local = [link for link in links if not re.match(r"\w+://", link)]
    assert local
    broken = []
    for link in local:
        path, _, anchor = link.partition("#")
        target = ROOT / path
        if not target.exists() or (anchor and anchor not in _anchors(target)):
            broken.append(link)
    assert not broken


def test_readme_is_a_front_page():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 200


def test_site_builds_strict(tmp_path):
    """`mkdocs build --strict` (mkdocs.yml: strict, and every validation a warning): a page outside the nav, a link
    to a missing page or anchor fails it. ~2 s."""
    run = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert (tmp_path / "site" / "papers" / "000" / "index.html").exists()
