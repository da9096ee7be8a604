"""Downstream datasets: the toy world's task, a hub dataset, or a local jsonl/parquet file, as (query, response).

    python launch.py dataset=jsonl dataset.path=my.jsonl dataset.query_field=question dataset.response_field=answer

Each ``dataset.source`` is an entry of ``DATASET_SOURCES``: how it loads its rows, what of them is the train key's
data part, and how many rows it holds when that is known without loading them. Hub and local files go through the
same ``datasets.load_dataset`` call (:func:`forgetting.data.formats.load_rows`); only the row builder or field
mapping differs. Adding a source: a class with the same members under ``@DATASET_SOURCES.register("name")``.
"""
from __future__ import annotations

from pathlib import Path

from forgetting.config import DatasetConfig, WorldConfig
from forgetting.data.files import check_file, file_builder, is_local, local_files
from forgetting.data.formats import load_rows
from forgetting.registry import Registry
from forgetting.store import Artifact, input_sha256
from forgetting.toy.world import ToyWorld

DATASET_SOURCES: Registry[type] = Registry("dataset.source")


@DATASET_SOURCES.register("toy")
class ToyTask:
    """The toy world's downstream task (its arithmetic problems): the world's key is the data's."""

    reads_path = False  # dataset.path is not read

    @staticmethod
    def rows(cfg: DatasetConfig, world: Artifact | None) -> list[dict]:
        return ToyWorld(world).down_train()

    @staticmethod
    def spec(cfg: DatasetConfig, world: Artifact | None) -> dict:
        return {"source": "toy", "world": world}

    @staticmethod
    def count(cfg: DatasetConfig, world_cfg: WorldConfig, read_files: bool = True) -> int | None:
        """The rows it holds, known without loading them (None: only loading tells)."""
        return world_cfg.n_down_train


@DATASET_SOURCES.register("hf")
class Hub:
    """A hub dataset id (or data files by URL or path) in ``dataset.path``, with ``subset`` and ``split``."""

    reads_path = True
    data_files = False  # path names data files: a local one's contents are in the key (an edited file is other
    # data) and its rows are counted for --plan; a local path of source=hf is read as the hub reads a repository

    @staticmethod
    def rows(cfg: DatasetConfig, world: Artifact | None) -> list[dict]:
        return load_rows(cfg)

    @classmethod
    def spec(cls, cfg: DatasetConfig, world: Artifact | None) -> dict:
        def contents(path: str) -> dict:
            return {"sha256": [input_sha256(f) for f in local_files(path)]} if cls.data_files and is_local(path) else {}

        spec = {"source": cfg.source, "path": cfg.path, "subset": cfg.subset, "split": cfg.split,
                "rows": {"builder": cfg.builder} if cfg.builder else
                {"query_field": cfg.query_field, "response_field": cfg.response_field}, **contents(cfg.path)}
        if cfg.mix_with:
            spec["mix_with"] = [{"path": p, **contents(p)} for p in cfg.mix_with]
        return spec

    @classmethod
    def count(cls, cfg: DatasetConfig, world_cfg: WorldConfig, read_files: bool = True) -> int | None:
        """The rows of ``path`` and ``mix_with`` when they are local files on disk (source=jsonl) and
        ``read_files``; None when only loading them would tell."""
        paths = [cfg.path, *cfg.mix_with]
        if cls.data_files and read_files and all(file_builder(p) and is_local(p) and local_files(p) and
                                              all(Path(f).is_file() for f in local_files(p)) for p in paths):
            return sum(len(check_file("dataset.path", p, cfg)) for p in paths)
        return None


@DATASET_SOURCES.register("jsonl")
class Files(Hub):
    """Local (or remote) data files in ``dataset.path``: ``.jsonl``, ``.json``, ``.parquet``, ``.csv``, or a glob."""

    data_files = True


def load_downstream(cfg: DatasetConfig, world: Artifact | None) -> list[dict]:
    rows = DATASET_SOURCES[cfg.source].rows(cfg, world)
    return rows[: cfg.limit] if cfg.limit else rows


def downstream_spec(cfg: DatasetConfig, world: Artifact | None) -> dict:
    """What :func:`load_downstream` and the row encoding read — the train key's data part: the source's own (the
    toy world's task, or the source's location, split, row mapping and, for local files, their contents' digests);
    then the limit and the format. The test split's and validation rows' settings are the evaluation's, except the
    rows that ``validation_rows`` takes from training."""
    spec = DATASET_SOURCES[cfg.source].spec(cfg, world)
    if cfg.validation_rows:  # rows held out of training (absent when 0: the keys made before it existed stay valid)
        spec["validation_rows"] = cfg.validation_rows
    spec.update(limit=cfg.limit, format=cfg.format)
    if cfg.format == "plain":
        spec["prompt_template"] = cfg.prompt_template
    return spec
