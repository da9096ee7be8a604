"""Downstream rows as (query, response): per-dataset row builders, the one hub/local loader, chat encoding.

    pytest tests/data/test_formats.py

A builder maps one row of a dataset's own schema to ``{"query", "response"}``; the encoder then applies the
prompt format (``dataset.format``): ``plain`` fills ``dataset.prompt_template`` (MetaMathQA, paper Appendix B),
``chat`` wraps the query in the tokenizer's chat template as the user turn, with no system prompt (MedReason,
paper Appendix B).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Callable

from forgetting.config import DatasetConfig
from forgetting.data.encode import IGNORE

THINK_OPEN, THINK_CLOSE = "<think>\n", "\n</think>\n\n"
# extensions that make ``path`` a data file (local, glob, http(s)://, hf://) rather than a hub dataset id
_FILE_BUILDERS = {".parquet": "parquet", ".json": "json", ".jsonl": "json", ".json.gz": "json", ".jsonl.gz": "json",
                  ".json.zst": "json", ".jsonl.zst": "json", ".csv": "csv"}


def metamathqa(row: dict) -> dict:
    """``meta-math/MetaMathQA`` (columns query, response, type, original_question): used as is; the response
    already ends "The answer is: N", which the GSM8K-style strict-match filter reads."""
    return {"query": row["query"], "response": row["response"]}


def medreason(row: dict) -> dict:
    """``UCSC-VLAA/MedReason`` (columns dataset_name, id_in_dataset, question, answer, reasoning, options): the
    question, then the reasoning inside ``<think>…</think>``, then the answer (paper Appendix B). The query is
    the ``question`` column alone, as MedReason's own SFT script builds its prompt (src/model_training/SFT.py:
    ``q = da['question']``); ``medreason_options`` also appends the separate ``options`` text."""
    return {"query": row["question"], "response": THINK_OPEN + row["reasoning"] + THINK_CLOSE + row["answer"]}


def medreason_options(row: dict) -> dict:
    """MedReason with its answer choices (``options``: "Answer Choices:\\nA. …\\nB. …", empty for open questions)
    after the question, as the multiple-choice benchmarks (MedQA, MedBullets) present them."""
    out = medreason(row)
    options = (row["options"] or "").strip()
    if options:
        out["query"] = row["question"].rstrip() + "\n" + options
    return out


BUILDERS: dict[str, Callable[[dict], dict]] = {
    "metamathqa": metamathqa,
    "medreason": medreason,
    "medreason_options": medreason_options,
}


def file_builder(path: str) -> str | None:
    """The ``datasets`` builder for a data-file path (``json``, ``parquet``, ``csv``), None for a hub id."""
    p = str(path).lower()
    return next((b for ext, b in _FILE_BUILDERS.items() if p.endswith(ext)), None)


def load_source(path: str, subset: str | None, split: str, streaming: bool = False):
    """One ``datasets.load_dataset`` call for a hub id (with subset and split) or a data file (local path, glob
    or URL, loaded with the json/parquet/csv builder as its single ``train`` split)."""
    from datasets import load_dataset

    builder = file_builder(path)
    if builder:
        return load_dataset(builder, data_files=str(path), split="train", streaming=streaming)
    return load_dataset(str(path), subset, split=split, streaming=streaming)


def load_rows(cfg: DatasetConfig) -> list[dict]:
    """``[{"query", "response"}]`` from a hub dataset (``source=hf``) or a local file (``source=jsonl``),
    through ``cfg.builder`` if set, else the ``query_field``/``response_field`` columns."""
    if cfg.source not in ("hf", "jsonl"):
        raise ValueError(f"dataset.source={cfg.source!r} has no rows to load here: expected 'hf' or 'jsonl'")
    if cfg.builder is not None and cfg.builder not in BUILDERS:
        raise ValueError(f"dataset.builder={cfg.builder!r} is unknown: expected one of {sorted(BUILDERS)}")
    if cfg.source == "jsonl" and not file_builder(cfg.path):
        raise ValueError(f"dataset.path={cfg.path!r} is not a .json/.jsonl/.parquet/.csv file")
    ds = load_source(cfg.path, cfg.subset, cfg.split)
    columns = list(ds.column_names)
    if cfg.builder is None:
        build = lambda r: {"query": r[cfg.query_field], "response": r[cfg.response_field]}  # noqa: E731
        for name in (cfg.query_field, cfg.response_field):
            if name not in columns:
                raise ValueError(f"dataset field {name!r} not in {cfg.path}: it has {columns}")
    else:
        build = BUILDERS[cfg.builder]
    if cfg.limit:
        ds = ds.select(range(min(cfg.limit, len(ds))))
    try:
        return [build(r) for r in ds]
    except KeyError as e:
        raise ValueError(f"dataset field {e.args[0]!r} (builder {cfg.builder!r}) not in {cfg.path}: "
                         f"it has {columns}") from None


def _as_ids(out) -> list[int]:
    """``apply_chat_template(tokenize=True)`` gives a list, or a BatchEncoding/dict in transformers 5."""
    if isinstance(out, Mapping) or hasattr(out, "input_ids"):
        out = out["input_ids"]
    if hasattr(out, "tolist"):
        out = out.tolist()
    if out and isinstance(out[0], list):  # a batch of one
        out = out[0]
    return [int(i) for i in out]


def chat_prompt_ids(tokenizer, query: str) -> list[int]:
    """The user turn and the assistant header, no system prompt; exactly one BOS, at the start."""
    messages = [{"role": "user", "content": query}]
    ids = _as_ids(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                                return_dict=False))
    bos = tokenizer.bos_token_id
    n_bos = sum(i == bos for i in ids) if bos is not None else 0
    if bos is None or n_bos != 1 or ids[0] != bos:
        name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
        raise ValueError(f"chat template of tokenizer {name!r} gives {n_bos} BOS tokens (id {bos}) "
                         f"{'not ' if ids and ids[0] != bos else ''}at the start: expected exactly one, first")
    return ids


def encode_chat(tokenizer, query: str, response: str, max_len: int, weight: float = 1.0) -> dict:
    """``BOS <user> query <assistant> response EOS`` with loss on the response and EOS only.

    Newer R1-Distill templates end the generation prompt with ``<think>\\n``; a response that also opens with
    ``<think>\\n`` (MedReason's builder) would then carry it twice, so the response's copy is dropped and the
    trained sequence is the same with either template version."""
    p = chat_prompt_ids(tokenizer, query)
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": query}], add_generation_prompt=True,
                                             tokenize=False)
    if rendered.endswith(THINK_OPEN) and response.startswith(THINK_OPEN):
        response = response[len(THINK_OPEN):]
    r = list(tokenizer(response, add_special_tokens=False).input_ids)
    eos = tokenizer.eos_token_id
    if not r or r[-1] != eos:
        r.append(eos)
    ids = (p + r)[:max_len]
    labels = ([IGNORE] * len(p) + r)[:max_len]
    return {"input_ids": ids, "labels": labels, "weight": weight}
