"""Held-out text that a real model was trained on and that is available offline: the Python standard library.

    python launch.py +experiment=smollm2 debug=dry
    pytest tests/evaluate/test_heldout.py

Pretraining mixtures of open models (SmolLM2's among them) contain public Python code, and the standard
library's own source is among the most copied Python there is; its docstrings are English prose written for
people. Both are on every machine that runs this project, so they measure forgetting on real pretraining-like
text with no download:

- ``stdlib_code``: blocks of ``CODE_LINES`` consecutive lines (at least half of them non-blank) of the
  top-level stdlib modules;
- ``stdlib_prose``: module, class and function docstrings of at least ``MIN_PROSE_CHARS`` characters.

Documents are drawn with a fixed seed from the running interpreter's standard library; the Python version is
part of the evaluation key (another version has other files).

The built-in corpora are the ``CORPORA`` registry: another one is a function returning its documents, under
``@CORPORA.register("name")``.

A corpus may also be a local ``.jsonl`` file of ``{"text": ...}`` documents held out of the model's pretraining — a
Dolma or DCLM sample, as paper 003 measures forgetting by the held-out pretraining loss: its first ``n`` documents,
named by the file's stem (``eval.corpora=[/data/dclm_heldout.jsonl]`` → ``pre/dclm_heldout/loss``); its content's
digest is part of the evaluation key.
"""
from __future__ import annotations

import ast
import random
import sys
import sysconfig
from pathlib import Path
from typing import Callable

from forgetting.registry import Registry

# eval.corpora=[<name>] → the function listing the corpus's documents (each run samples eval.corpus_docs of them)
CORPORA: Registry[Callable[[], list[str]]] = Registry("eval.corpora")

CODE_LINES = 30
MIN_PROSE_CHARS = 300


def _modules() -> list[Path]:
    return sorted(p for p in Path(sysconfig.get_paths()["stdlib"]).glob("*.py") if not p.name.startswith("_"))


@CORPORA.register("stdlib_code")
def _code_blocks() -> list[str]:
    blocks = []
    for path in _modules():
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        for start in range(0, len(lines) - CODE_LINES + 1, CODE_LINES):
            block = lines[start:start + CODE_LINES]
            if sum(bool(line.strip()) for line in block) >= CODE_LINES // 2:
                blocks.append("\n".join(block))
    return blocks


@CORPORA.register("stdlib_prose")
def _docstrings() -> list[str]:
    docs = []
    for path in _modules():
        try:
            tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"))
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc and len(doc) >= MIN_PROSE_CHARS:
                    docs.append(doc)
    return docs


def is_corpus_file(name: str) -> bool:
    """Whether an ``eval.corpora`` entry is a file of documents rather than a built-in corpus."""
    return str(name).endswith(".jsonl")


def corpus_name(name: str) -> str:
    """The corpus's name in metric keys: a built-in corpus's own, a file's stem (``pre/<name>/loss``)."""
    return Path(name).name[: -len(".jsonl")] if is_corpus_file(name) else name


def corpus(name: str, n: int, seed: int = 0) -> list[str]:
    """``n`` documents of corpus ``name`` (fewer if it has fewer): for a built-in corpus the same ones for the same
    Python, for a file its first ``n`` (a held-out sample is the file's whole point: no sampling from it)."""
    if is_corpus_file(name):
        import json

        docs = []
        with open(Path(name).expanduser(), encoding="utf-8") as f:
            for line in f:
                if len(docs) == n:
                    break
                if line.strip():
                    text = json.loads(line).get("text")
                    if isinstance(text, str) and text.strip():
                        docs.append(text)
        return docs
    docs = CORPORA[name]()  # an unknown name: UnknownName (a ConfigError) naming the built-in corpora
    return random.Random(f"{name}:{seed}").sample(docs, min(n, len(docs)))


def python_version() -> str:
    return ".".join(map(str, sys.version_info[:3]))
