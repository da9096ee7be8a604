"""Pretraining documents for the replay baseline (P): the toy world's corpus, a streamed hub corpus, or a file.

    pytest tests/data/test_replay.py

OLMo-1B replays Dolma (paper §3: "we subsample 400K rows"). A hub or file source is subsampled uniformly, without
replacement: row ``i`` of the source (in its fixed order: files sorted, rows in file order) gets the ``i``-th draw
of a generator seeded with ``seed`` as its key, and the ``k`` rows with the smallest keys, in key order, are the
sample. One streaming pass keeps them in a bounded heap (``k`` texts in memory). Because the order is by key, the
rows for a smaller ``n`` are a prefix of the rows for a larger one: a ratio grid shares its rows.

**Cost: the whole source is read once**, however few rows are kept — every file ``replay.path`` matches. For all of
Dolma (several TB of .json.gz) that is hours of streaming; point ``replay.path`` at the files to sample from (the
subsample is uniform over them). The pipeline stores the ``replay.max_rows`` sample as a ``replay`` artifact, so
the pass is made once per source and seed, shared by every ratio and rerun.

``allenai/dolma`` on the hub is a loading script, which ``datasets`` >= 4 no longer runs: point
``replay.path`` at Dolma's data files instead (``.json.gz`` URLs or a local copy), which load through the
``json`` builder on the same streaming path as any hub dataset.

Each ``replay.source`` is an entry of ``REPLAY_SOURCES``: its key spec, its pool of documents, and whether that pool
is stored as a ``replay`` artifact. Adding a source: a class with the same members under
``@REPLAY_SOURCES.register("name")``.
"""
from __future__ import annotations

import heapq
import random
from dataclasses import asdict

from forgetting.config import ReplayConfig
from forgetting.data.formats import file_builder, load_source
from forgetting.data.jsonl import read_jsonl, write_jsonl
from forgetting.registry import Registry
from forgetting.toy.world import ToyWorld

REPLAY_SOURCES: Registry[type] = Registry("replay.source")


@REPLAY_SOURCES.register("toy")
class ToyCorpus:
    """The toy world's pretraining corpus: a seeded shuffle of it, its first ``max_rows`` documents (the world is
    stored: nothing else is)."""

    stored = False  # no replay artifact: the pool is drawn from the world each time

    @staticmethod
    def spec(cfg: ReplayConfig, seed: int, world) -> dict:
        return {"source": "toy", "world": world, "text_field": cfg.text_field, "max_rows": cfg.max_rows, "seed": seed}

    @staticmethod
    def pool(cfg: ReplayConfig, n: int, seed: int, world, store) -> list[str]:
        if world is None:
            raise ValueError("replay.source='toy' needs the toy world's directory (its corpus.jsonl)")
        corpus = ToyWorld(world).corpus()
        order = list(range(len(corpus)))
        random.Random(f"replay:{seed}").shuffle(order)
        return [corpus[i] for i in order[: cfg.max_rows]]


@REPLAY_SOURCES.register("hf")
class HubCorpus:
    """A hub corpus (or data files by URL, e.g. Dolma's .json.gz) in ``replay.path``, streamed once for a uniform
    sample of ``max_rows`` documents, which is stored as the ``replay`` artifact."""

    stored = True

    @staticmethod
    def spec(cfg: ReplayConfig, seed: int, world) -> dict:
        return {"replay": asdict(cfg), "seed": seed}

    @classmethod
    def pool(cls, cfg: ReplayConfig, n: int, seed: int, world, store) -> list[str]:
        if not cfg.path:
            raise ValueError(f"replay.source={cfg.source!r} needs replay.path (a hub id or a data file)")
        cls.check_path(cfg)
        if store is None:
            return uniform_sample(cfg, min(n, cfg.max_rows), seed)
        art = store.build("replay", cls.spec(cfg, seed, world), lambda out: write_jsonl(
            out / "rows.jsonl", [{"text": t} for t in uniform_sample(cfg, cfg.max_rows, seed)]))
        return [r["text"] for r in read_jsonl(art.path / "rows.jsonl")][:n]

    @staticmethod
    def check_path(cfg: ReplayConfig) -> None:
        """A hub id or data files: anything ``datasets`` streams."""


@REPLAY_SOURCES.register("jsonl")
class FileCorpus(HubCorpus):
    """Data files (``.json``/``.jsonl`` (``.gz``), ``.parquet``; a glob names several) in ``replay.path``."""

    @staticmethod
    def check_path(cfg: ReplayConfig) -> None:
        if not file_builder(cfg.path):
            raise ValueError(f"replay.path={cfg.path!r} is not a .json/.jsonl(.gz)/.parquet file")


def replay_spec(cfg: ReplayConfig, seed: int, world=None) -> dict:
    """What the replay rows are drawn from: the toy world's corpus (its key), or the source whose ``max_rows``
    sample is stored as the ``replay`` artifact (this spec is that artifact's)."""
    return REPLAY_SOURCES[cfg.source].spec(cfg, seed, world)


def load_replay_corpus(cfg: ReplayConfig, n: int, seed: int, world=None, store=None) -> list[str]:
    """Exactly ``n`` replay texts in their final order.

    The pool is the first ``min(n, max_rows)`` documents of the seeded order (toy: a shuffle of the world's corpus,
    ``world`` its artifact or directory; hub or file: the uniform subsample); when ``n`` exceeds the pool (a ratio
    above ``max_rows`` rows, or a small corpus) the pool repeats, as the toy path always did. Smaller ``n`` is a
    prefix of larger ``n`` for the same seed. Use the list as is: reshuffling it would break that. With a ``store``
    (``forgetting.store.Store``), a hub or file source's ``max_rows`` sample is stored and read back instead of
    re-reading the source."""
    if n <= 0:
        return []
    pool = REPLAY_SOURCES[cfg.source].pool(cfg, n, seed, world, store)
    if not pool:
        raise ValueError(f"replay corpus {cfg.path or 'toy'!r} has no documents")
    return [pool[j % len(pool)] for j in range(n)]


def uniform_sample(cfg: ReplayConfig, k: int, seed: int) -> list[str]:
    """``k`` texts drawn uniformly without replacement from the whole source, in the order of their random keys
    (one streaming pass; see the module docstring)."""
    rng = random.Random(f"replay:{seed}")
    heap: list[tuple[float, int, str]] = []  # (-key, row, text): the root is the largest key kept
    for i, row in enumerate(load_source(cfg.path, cfg.subset, cfg.split, streaming=True)):
        if cfg.text_field not in row:
            raise ValueError(f"replay.text_field {cfg.text_field!r} not in {cfg.path}: it has {sorted(row)}")
        key = rng.random()  # drawn for every row, so that row i's key depends on (seed, i) alone
        if len(heap) < k:
            heapq.heappush(heap, (-key, i, row[cfg.text_field]))
        elif key < -heap[0][0]:
            heapq.heapreplace(heap, (-key, i, row[cfg.text_field]))
    return [text for _, _, text in sorted(heap, reverse=True)]
