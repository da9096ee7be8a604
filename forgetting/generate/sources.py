"""Augmentation sources: context-free samples (CFS), contextual answers (CS), pretraining replay (P).

    pytest tests/generate/test_context_free.py

Samples are made in chunks of ``generator.chunk`` rows; chunk ``i`` is its own artifact, sampled with seed
``(generator.seed, i)``. A request for ``n`` rows takes the first ``n`` rows of chunks ``0..``, so 10% of a
200% generation is its prefix and a ratio grid pays for its largest point once, whatever order it runs in.
"""
from __future__ import annotations

import math
from pathlib import Path

from tqdm.auto import tqdm

from forgetting.data.jsonl import read_jsonl, write_jsonl
from forgetting.store import Artifact, Store


def _seed(seed: int, chunk: int) -> int:
    return seed * 1_000_003 + chunk


def context_free(store: Store, base: Artifact, gen, n: int, *, bos_id: int, load) -> list[dict]:
    """``n`` samples of the base model from its BOS token alone; each row is ``{"ids": [BOS, ...]}``.

    ``load()`` returns ``(model, tokenizer)`` and is called only when a chunk is missing."""
    chunk = gen.chunk
    spec = {"model": base, "source": "context_free", "temperature": gen.temperature, "top_p": gen.top_p,
            "max_new_tokens": gen.max_new_tokens, "batch_size": gen.batch_size, "seed": gen.seed,
            "chunk_size": chunk, "backend": gen.backend, "bos_id": bos_id}
    backend = None
    rows: list[dict] = []
    n_chunks = math.ceil(n / chunk)
    for i in tqdm(range(n_chunks), desc="context-free samples", unit="chunk", disable=n_chunks < 2):
        def make(tmp: Path, i=i) -> None:
            nonlocal backend
            if backend is None:
                backend = make_backend(gen.backend, *load())
            outs = backend.sample([[bos_id]] * chunk, temperature=gen.temperature, top_p=gen.top_p,
                                  max_new_tokens=gen.max_new_tokens, seed=_seed(gen.seed, i),
                                  batch_size=gen.batch_size)
            write_jsonl(tmp / "samples.jsonl", [{"ids": [bos_id] + o} for o in outs])

        art = store.build("generate", {**spec, "chunk": i}, make)
        rows.extend(read_jsonl(art.path / "samples.jsonl"))
    return rows[:n]


def make_backend(name: str, model, tokenizer):
    if name == "hf":
        from forgetting.generate.hf import HFBackend

        return HFBackend(model, tokenizer)
    raise ValueError(f"generator.backend={name!r} is not available here: expected 'hf'")
