"""Downstream datasets: the toy world's task, a hub dataset, or a local jsonl/parquet file, as (query, response).

    python launch.py dataset=jsonl dataset.path=my.jsonl dataset.query_field=question dataset.response_field=answer

Hub and local files go through the same ``datasets.load_dataset`` call (:func:`forgetting.data.formats.load_rows`);
only the row builder or field mapping differs.
"""
from __future__ import annotations

from forgetting.config import DatasetConfig
from forgetting.data.formats import load_rows
from forgetting.store import Artifact
from forgetting.toy.world import ToyWorld


def load_downstream(cfg: DatasetConfig, world: Artifact | None) -> list[dict]:
    if cfg.source == "toy":
        rows = ToyWorld(world).down_train()
    else:
        rows = load_rows(cfg)
    return rows[: cfg.limit] if cfg.limit else rows


def downstream_spec(cfg: DatasetConfig, world: Artifact | None) -> dict:
    """What :func:`load_downstream` and the row encoding read — the train key's data part: the toy world's task,
    or the source's location, split, row mapping and, for local files, their contents' digests; then the limit
    and the format. The test split's and validation rows' settings are the evaluation's, except the rows that
    ``validation_rows`` takes from training."""
    if cfg.source == "toy":
        spec = {"source": "toy", "world": world}
    else:
        from forgetting.data.files import is_local, local_files
        from forgetting.store import input_sha256

        spec = {"source": cfg.source, "path": cfg.path, "subset": cfg.subset, "split": cfg.split,
                "rows": {"builder": cfg.builder} if cfg.builder else
                {"query_field": cfg.query_field, "response_field": cfg.response_field}}
        if cfg.source == "jsonl" and is_local(cfg.path):  # an edited file is other data
            spec["sha256"] = [input_sha256(f) for f in local_files(cfg.path)]
        if cfg.mix_with:
            spec["mix_with"] = [{"path": p, **({"sha256": [input_sha256(f) for f in local_files(p)]}
                                               if cfg.source == "jsonl" and is_local(p) else {})}
                                for p in cfg.mix_with]
    if cfg.validation_rows:  # rows held out of training (absent when 0: the keys made before it existed stay valid)
        spec["validation_rows"] = cfg.validation_rows
    spec.update(limit=cfg.limit, format=cfg.format)
    if cfg.format == "plain":
        spec["prompt_template"] = cfg.prompt_template
    return spec
