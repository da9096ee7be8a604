"""The package's layers: no import circles (every import counts, inside functions too), the schema imports only the
errors and presets below it, and nothing below the pipeline imports it (parts and evaluators reach it through
``forgetting.runtime.Inputs.stages``).

    pytest tests/test_layers.py
"""
from __future__ import annotations

import ast
from pathlib import Path

from conftest import ROOT

PACKAGE = ROOT / "forgetting"
# the layers above the pipeline: what may import it
ABOVE_PIPELINE = {"forgetting.plan", "forgetting.checks", "forgetting.cli"}


def imports(root: Path = PACKAGE) -> dict[str, set[str]]:
    """module → the package's modules it imports (top level or inside functions; a name inside a module counts
    as the module)."""
    files = {".".join(p.relative_to(root.parent).with_suffix("").parts).removesuffix(".__init__"): p
             for p in root.rglob("*.py")}
    out: dict[str, set[str]] = {}
    for mod, path in files.items():
        found = set()
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([node.module] if node.module else []))
                names = [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            for name in names:
                while name and name not in files:
                    name = name.rpartition(".")[0]
                if name and name != mod and not mod.startswith(name + "."):
                    found.add(name)
        out[mod] = found
    return out


def circles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected sets of more than one module (iterative Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on.add(start)
        while work:
            v, children = work[-1]
            for w in children:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    scc = set()
                    while True:
                        w = stack.pop()
                        on.discard(w)
                        scc.add(w)
                        if w == v:
                            break
                    if len(scc) > 1:
                        out.append(scc)
    return out


def test_circles_are_found():
    """The check itself: a circle through three modules is found, a chain is not."""
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]
    assert circles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_no_import_circles():
    assert circles(imports()) == []


def test_nothing_below_the_pipeline_imports_it():
    graph = imports()
    importers = {m for m, deps in graph.items() if "forgetting.pipeline" in deps}
    assert importers <= ABOVE_PIPELINE, sorted(importers - ABOVE_PIPELINE)


def test_the_schema_imports_only_the_bottom_layer():
    """The bottom layer (the errors, and the presets Hydra's search path holds) imports nothing of the package; the
    schema imports only it."""
    graph = imports()
    assert graph["forgetting.errors"] == set() and graph["forgetting.presets"] == set()
    assert graph["forgetting.config"] <= {"forgetting.errors", "forgetting.presets"}



# imported only by the functions that use them: optional, or slow to import (transformers' Trainer brings peft,
# accelerate, datasets and bitsandbytes), so that bad input, --cfg and --plan answer without them
HEAVY = ("vllm", "deepspeed", "wandb", "lm_eval", "transformers.trainer", "peft", "bitsandbytes", "datasets")
# the package's one module that imports a heavy dependency at its top (the HF Trainer subclass): imported late
LATE = {"forgetting.train.fit"}


def late_imports(root: Path = PACKAGE) -> list[str]:
    """``file:line`` of every import of the package made inside a function, except of a module in ``LATE`` (a module
    imported late hides where it sits in the layers, and a circle could hide behind it)."""
    found = []
    for path in sorted(root.rglob("*.py")):
        for fn in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(fn):
                    names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                        [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else \
                        ["forgetting"] if isinstance(node, ast.ImportFrom) else []
                    if any(n.split(".")[0] == "forgetting" and n not in LATE for n in names):
                        found.append(f"{path.relative_to(root.parent)}:{node.lineno}")
    return sorted(set(found))


def test_the_package_is_imported_at_the_top_of_files(tmp_path):
    """Every ``forgetting.*`` import stands at the top of its file (but ``LATE``'s); the check finds a planted one."""
    (tmp_path / "forgetting").mkdir()
    (tmp_path / "forgetting" / "a.py").write_text("import os\n\ndef f():\n    from forgetting import b\n"
                                                  "    from forgetting.train.fit import fit\n")
    assert late_imports(tmp_path / "forgetting") == ["forgetting/a.py:4"]
    assert late_imports() == []


def test_the_launcher_imports_no_heavy_dependency():
    """Importing the command line (which validates and checks a run before any stage) pulls none of ``HEAVY``;
    and no module but ``LATE`` imports one at its top, so every other module can be imported at the top."""
    import subprocess
    import sys

    code = f"import sys, forgetting.cli\nprint(sorted(h for h in {HEAVY!r} if h in sys.modules))\n"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout + out.stderr[-2000:]
    for path in PACKAGE.rglob("*.py"):
        mod = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        top = [n for n in ast.parse(path.read_text(encoding="utf-8")).body
               if isinstance(n, (ast.Import, ast.ImportFrom))]
        names = [a.name for n in top if isinstance(n, ast.Import) for a in n.names] + \
            [f"{n.module}.{a.name}".lower() for n in top if isinstance(n, ast.ImportFrom) and n.module for a in n.names]
        heavy = [n for n in names if n.split(".")[0] in HEAVY or any(n.startswith(h + ".") for h in HEAVY)]
        assert mod in LATE or not heavy, (mod, heavy)
