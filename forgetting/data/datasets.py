"""Downstream datasets: the toy world's task, a hub dataset, or a local jsonl/parquet file, as (query, response).

    python launch.py dataset=jsonl dataset.path=my.jsonl dataset.query_field=question dataset.response_field=answer

Hub and local files go through the same ``datasets.load_dataset`` call (:func:`forgetting.data.formats.load_rows`);
only the row builder or field mapping differs.
"""
from __future__ import annotations

from forgetting.config import DatasetConfig
from forgetting.data.formats import load_rows
from forgetting.data.jsonl import read_jsonl
from forgetting.store import Artifact


def load_downstream(cfg: DatasetConfig, world: Artifact | None) -> list[dict]:
    if cfg.source == "toy":
        rows = read_jsonl(world.path / "down_train.jsonl")
    else:
        rows = load_rows(cfg)
    return rows[: cfg.limit] if cfg.limit else rows
