"""Pretraining documents for the replay baseline (P): the toy world's corpus, a streamed hub corpus, or a file.

    pytest tests/data/test_replay.py

OLMo-1B replays Dolma (paper §3: "we subsample 400K rows"). The corpus is streamed, shuffled through a
fixed-size buffer with ``seed``, and read only as far as needed, so a 400K-row subsample never downloads the
whole corpus. Because the buffer size and seed fix the order, the rows for a smaller ``n`` are a prefix of the
rows for a larger one: a ratio grid shares its rows.

``allenai/dolma`` on the hub is a loading script, which ``datasets`` >= 4 no longer runs: point
``replay.path`` at Dolma's data files instead (``.json.gz`` URLs or a local copy), which load through the
``json`` builder on the same streaming path as any hub dataset.
"""
from __future__ import annotations

import random
from itertools import islice
from pathlib import Path

from forgetting.config import ReplayConfig
from forgetting.data.formats import file_builder, load_source
from forgetting.data.jsonl import read_jsonl

SHUFFLE_BUFFER = 10_000  # fixed, never derived from n: the stream order must not depend on how much is read


def load_replay_corpus(cfg: ReplayConfig, n: int, seed: int, world_dir: Path | str | None = None) -> list[str]:
    """Exactly ``n`` replay texts in their final order.

    The pool is the first ``min(n, max_rows)`` documents of the seeded shuffle; when ``n`` exceeds the pool
    (a ratio above ``max_rows`` rows, or a small corpus) the pool repeats, as the toy path always did. Smaller
    ``n`` is a prefix of larger ``n`` for the same seed. Use the list as is: reshuffling it would break that."""
    if n <= 0:
        return []
    if cfg.source == "toy":
        if world_dir is None:
            raise ValueError("replay.source='toy' needs the toy world's directory (its corpus.jsonl)")
        corpus = [r[cfg.text_field] for r in read_jsonl(Path(world_dir) / "corpus.jsonl")]
        order = list(range(len(corpus)))
        random.Random(f"replay:{seed}").shuffle(order)
        pool = [corpus[i] for i in order[: cfg.max_rows]]
    elif cfg.source in ("hf", "jsonl"):
        if not cfg.path:
            raise ValueError(f"replay.source={cfg.source!r} needs replay.path (a hub id or a data file)")
        if cfg.source == "jsonl" and not file_builder(cfg.path):
            raise ValueError(f"replay.path={cfg.path!r} is not a .json/.jsonl(.gz)/.parquet file")
        pool = _stream_texts(cfg, min(n, cfg.max_rows), seed)
    else:
        raise ValueError(f"replay.source={cfg.source!r} is invalid: expected 'toy', 'hf' or 'jsonl'")
    if not pool:
        raise ValueError(f"replay corpus {cfg.path or 'toy'!r} has no documents")
    return [pool[j % len(pool)] for j in range(n)]


def _stream_texts(cfg: ReplayConfig, k: int, seed: int) -> list[str]:
    ds = load_source(cfg.path, cfg.subset, cfg.split, streaming=True)
    ds = ds.shuffle(seed=seed, buffer_size=SHUFFLE_BUFFER)
    texts = []
    for row in islice(iter(ds), k):
        if cfg.text_field not in row:
            raise ValueError(f"replay.text_field {cfg.text_field!r} not in {cfg.path}: it has {sorted(row)}")
        texts.append(row[cfg.text_field])
    return texts
