"""Downstream datasets: the toy world's task, a hub dataset, or a local jsonl/parquet file, as (query, response).

    python launch.py dataset=jsonl dataset.path=my.jsonl dataset.query_field=question dataset.response_field=answer

Hub and local files go through the same ``datasets.load_dataset`` call; only the field mapping differs.
"""
from __future__ import annotations

from forgetting.config import DatasetConfig
from forgetting.data.jsonl import read_jsonl
from forgetting.store import Artifact


def load_downstream(cfg: DatasetConfig, world: Artifact | None) -> list[dict]:
    if cfg.source == "toy":
        rows = read_jsonl(world.path / "down_train.jsonl")
    else:
        rows = _load_rows(cfg)
    return rows[: cfg.limit] if cfg.limit else rows


def _load_rows(cfg: DatasetConfig) -> list[dict]:
    from datasets import load_dataset

    if cfg.source == "jsonl":
        kind = "parquet" if str(cfg.path).endswith(".parquet") else "json"
        ds = load_dataset(kind, data_files=str(cfg.path), split="train")
    elif cfg.source == "hf":
        ds = load_dataset(cfg.path, split=cfg.split)
    else:
        raise ValueError(f"dataset.source={cfg.source!r} is invalid: expected 'toy', 'hf' or 'jsonl'")
    for field in (cfg.query_field, cfg.response_field):
        if field not in ds.column_names:
            raise ValueError(f"dataset field {field!r} not in {cfg.path}: it has {ds.column_names}")
    return [{"query": r[cfg.query_field], "response": r[cfg.response_field]} for r in ds]
