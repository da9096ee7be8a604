"""Local data files checked row by row before any compute: every row must give a non-empty query and response.

    python launch.py dataset=jsonl dataset.path=empty.jsonl     # error: dataset.path='empty.jsonl' is invalid: ...
    pytest tests/data/test_files.py tests/test_bad_input.py

``datasets`` fails on a bad file late and obscurely (a bare ``StopIteration`` for an empty file, an Arrow error for
a malformed line or mixed types) and trains silently on empty strings, so ``launch.py`` reads the files itself
first (``forgetting.checks.check_inputs``). The rule: **a file with any bad row is refused**, with the count of bad
rows and the first one's line (``.jsonl``) or row number, so that what is trained and scored is what the file says.
A row is bad when it does not parse, is not an object, lacks a mapped field (``dataset.query_field`` /
``response_field``, or what ``dataset.builder`` reads), or maps to a query or response that is not a string or is
blank; a test row also when its response has no answer ``dataset.answer_pattern`` can extract. Hub datasets get the
same row check when they are loaded (``forgetting.data.formats.load_rows``), which is after the stages before
training.
"""
from __future__ import annotations

import csv
import glob
import gzip
import io
import json
import os
import re
from typing import Any, Callable, Iterable, Iterator, Optional

from forgetting.config import DatasetConfig
from forgetting.data.builders import BUILDERS
from forgetting.errors import ConfigError

# extensions that make ``path`` a data file (local, glob, http(s)://, hf://) rather than a hub dataset id
_FILE_BUILDERS = {".parquet": "parquet", ".json": "json", ".jsonl": "json", ".json.gz": "json", ".jsonl.gz": "json",
                  ".json.zst": "json", ".jsonl.zst": "json", ".csv": "csv"}


def file_builder(path: str) -> str | None:
    """The ``datasets`` builder for a data-file path (``json``, ``parquet``, ``csv``), None for a hub id."""
    p = str(path).lower()
    return next((b for ext, b in _FILE_BUILDERS.items() if p.endswith(ext)), None)


def is_local(path: str) -> bool:
    return "://" not in str(path)


def local_files(path: str) -> list[str]:
    """The files a local path or glob names, in the order ``datasets`` reads them."""
    expanded = os.path.expanduser(str(path))
    return sorted(glob.glob(expanded)) if glob.has_magic(expanded) else [expanded]


# a file's first bytes, by how its name ends: what the name promises and the magic that proves it
_MAGIC = {".gz": ("a gzip file", b"\x1f\x8b"), ".zst": ("a zstd file", b"\x28\xb5\x2f\xfd"),
          ".parquet": ("a Parquet file", b"PAR1"), ".gguf": ("a GGUF file", b"GGUF")}


def content_problem(path: str) -> Optional[str]:
    """What a local file is not, though its name says so (``None``: it is): a compressed, Parquet, GGUF or
    safetensors file by its magic bytes / header, a ``.json`` that is no JSON object (a model's config.json);
    rows of data files are checked by :func:`check_rows`. Found before a reader library raises its own traceback."""
    name = str(path).lower()
    with open(path, "rb") as f:
        head = f.read(8)
        for ext, (what, magic) in _MAGIC.items():
            if name.endswith(ext):
                tail = magic
                if ext == ".parquet" and os.path.getsize(path) >= 8:  # Parquet ends with its magic too
                    f.seek(-4, os.SEEK_END)
                    tail = f.read(4)
                ok = head.startswith(magic) and tail == magic
                return None if ok else f"{what}, as its name says ({path} starts with {head!r})"
        if name.endswith(".safetensors"):
            size = int.from_bytes(head, "little") if len(head) == 8 else -1
            try:
                ok = 0 < size <= os.path.getsize(path) - 8 and isinstance(json.loads(f.read(size)), dict)
            except ValueError:
                ok = False
            return None if ok else f"a safetensors file, as its name says ({path} has no JSON header)"
        if name.endswith(".json") and not name.endswith((".jsonl", ".json.gz")):
            try:
                ok = isinstance(json.loads(head + f.read()), dict)
            except ValueError:
                ok = False
            return None if ok else f"a JSON object, as its name says ({path} is not one)"
    return None


def read_rows(path: str) -> Iterator[tuple[str, Any]]:
    """``(where, row)`` for every row of a local data file, ``where`` naming its line (JSON lines, CSV) or row; a
    row that does not parse comes as a ``ValueError``."""
    name = path.lower()
    if name.endswith(".parquet"):
        import pyarrow.parquet as pq

        for i, row in enumerate(pq.read_table(path).to_pylist(), 1):
            yield f"row {i}", row
        return
    opener = gzip.open if name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as f:
        text = f.read()
    if name.endswith((".csv", ".csv.gz")):
        for i, row in enumerate(csv.DictReader(io.StringIO(text)), 2):  # line 1 is the header
            yield f"line {i}", row
        return
    if name.endswith((".json", ".json.gz")):  # one JSON array (MetaMathQA-395K.json), or JSON lines as datasets reads
        try:
            whole = json.loads(text)
        except ValueError:
            whole = None
        if isinstance(whole, list):
            for i, row in enumerate(whole, 1):
                yield f"row {i}", row
            return
    for i, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                yield f"line {i}", json.loads(line)
            except ValueError as err:
                yield f"line {i}", ValueError(f"not JSON ({err})")


def row_builder(cfg: DatasetConfig) -> Callable[[dict], dict]:
    """A raw row → ``{"query", "response"}``: ``dataset.builder``, else the two mapped fields."""
    if cfg.builder is None:
        return lambda r: {"query": r[cfg.query_field], "response": r[cfg.response_field]}
    return BUILDERS[cfg.builder]  # an unknown name: UnknownName (a ConfigError) naming the registered builders


def extract_answer(pattern: re.Pattern, text: str) -> Optional[str]:
    """The answer in ``text``: the first match's first group (the whole match if the pattern has none), stripped."""
    m = pattern.search(text)
    if m is None:
        return None
    return (m.group(1) if pattern.groups else m.group(0)).strip()


def row_problem(row: Any, build: Callable[[dict], dict], cfg: DatasetConfig,
                answers: Optional[re.Pattern] = None) -> Optional[str]:
    """Why a raw row cannot be a (query, response) pair, or None when it can."""
    if isinstance(row, Exception):
        return str(row)
    if not isinstance(row, dict):
        return f"not an object but {type(row).__name__}"
    try:
        pair = build(row)
    except KeyError as err:
        return f"no field {err.args[0]!r} (it has {', '.join(map(repr, row))})"
    except (TypeError, AttributeError, ValueError) as err:  # a builder given a field of another type
        return f"builder {cfg.builder!r} cannot read it ({type(err).__name__}: {err})"
    for part, field in (("query", cfg.query_field), ("response", cfg.response_field)):
        name = repr(field) if cfg.builder is None else f"the {part} of builder {cfg.builder!r}"
        value = pair[part]
        if not isinstance(value, str):
            return f"{name} is {type(value).__name__} {repr(value)[:40]}, not a string"
        if not value.strip():
            return f"{name} is {'empty' if not value else 'blank'}"
    if answers is not None and extract_answer(answers, pair["response"]) is None:
        return f"its response has no answer matching dataset.answer_pattern={answers.pattern!r}"
    return None


def check_rows(key: str, path: str, rows: Iterable[tuple[str, Any]], cfg: DatasetConfig,
               answers: Optional[re.Pattern] = None) -> list[tuple[str, dict]]:
    """``(where, {"query", "response"})`` for every row, or ConfigError naming ``key=path``, how many rows are bad
    and the first (a file with any bad row is refused)."""
    build = row_builder(cfg)
    good, bad, first, n = [], 0, None, 0
    for where, row in rows:
        n += 1
        problem = row_problem(row, build, cfg, answers)
        if problem is None:
            good.append((where, build(row)))
        else:
            bad += 1
            first = first or f"{where}: {problem}"
    fields = (f"non-empty string fields {cfg.query_field!r} and {cfg.response_field!r}" if cfg.builder is None
              else f"what builder {cfg.builder!r} reads, as non-empty strings")
    if n == 0:
        raise ConfigError(f"{key}={path!r} is invalid: expected rows with {fields}: it has no rows")
    if bad:
        answer = " and a response with an answer" if answers is not None else ""
        raise ConfigError(f"{key}={path!r} is invalid: expected every row to be an object with {fields}{answer} "
                          f"(a file with a bad row is refused): {bad} of {n} rows are not (first: {first})")
    return good


def check_file(key: str, path: str, cfg: DatasetConfig,
               answers: Optional[re.Pattern] = None) -> list[tuple[str, dict]]:
    """Every row of a local data file (or of every file a glob names), checked, as :func:`check_rows` returns them;
    ``[]`` for a file this module does not read (``.zst``, a URL), which ``load_rows`` checks when it loads it."""
    if not is_local(path) or str(path).lower().endswith(".zst"):
        return []
    rows: list[tuple[str, dict]] = []
    for name in local_files(path):
        problem = content_problem(name) if not name.lower().endswith(".json") else None  # .json: JSON lines too
        if problem:
            raise ConfigError(f"{key}={path!r} is invalid: expected {problem}")
        rows += check_rows(key, name if name != os.path.expanduser(path) else path, read_rows(name), cfg, answers)
    return rows
