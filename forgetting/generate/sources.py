"""Model-generated augmentation: context-free samples (CFS) and contextual answers (CS).

    pytest tests/generate/test_context_free.py tests/generate/test_sources.py

Replay rows (P) are not generated: ``forgetting.data.replay`` reads them from the pretraining corpus.

Model samples are made in chunks of ``generator.chunk`` rows; chunk ``i`` is its own artifact, sampled with seed
``(generator.seed, i)``. A request for ``n`` rows takes the first ``n`` rows of chunks ``0..``, so 10% of a
200% generation is its prefix and a ratio grid pays for its largest point once, whatever order it runs in.
Every row is training-ready token ids: ``{"ids": [...], "n_prompt": k}``, with loss on the tokens after the
first ``k`` (``k = 0``: every token).
"""
from __future__ import annotations

import math
from dataclasses import asdict
from typing import Callable

from tqdm.auto import tqdm

from forgetting.data.jsonl import read_jsonl, write_jsonl
from forgetting.store import Artifact, Store


def _chunked(store: Store, spec: dict, n: int, chunk: int, desc: str,
             make_chunk: Callable[[int, int], list[dict]]) -> list[dict]:
    """The first ``n`` rows of the chunk sequence ``spec``; ``make_chunk(i, size)`` builds a missing chunk."""
    rows: list[dict] = []
    n_chunks = math.ceil(n / chunk)
    for i in tqdm(range(n_chunks), desc=desc, unit="chunk", disable=n_chunks < 2):
        art = store.build("generate", {**spec, "chunk_size": chunk, "chunk": i},
                          lambda tmp, i=i: write_jsonl(tmp / "samples.jsonl", make_chunk(i, chunk)))
        rows.extend(read_jsonl(art.path / "samples.jsonl"))
    return rows[:n]


class _LazyBackend:
    """Loads the model only when a chunk is actually missing (a cached grid never loads it)."""

    def __init__(self, name: str, load: Callable):
        self.name, self.load, self.backend = name, load, None

    def sample(self, prompts: list[list[int]], gen, seed: int, temperature: float) -> list[list[int]]:
        if self.backend is None:
            self.backend = make_backend(self.name, *self.load())
        return self.backend.sample(prompts, temperature=temperature, top_p=gen.top_p,
                                   max_new_tokens=gen.max_new_tokens, seed=seed, batch_size=gen.batch_size)


def _gen_spec(gen, temperature: float) -> dict:
    skip = ("chunk", "temperature", "contextual_temperature")
    return {**{k: v for k, v in asdict(gen).items() if k not in skip}, "temperature": temperature}


def _seed(seed: int, chunk: int) -> int:
    return seed * 1_000_003 + chunk


def context_free(store: Store, base: Artifact, gen, n: int, *, bos_id: int, load: Callable) -> list[dict]:
    """``n`` samples of the base model from its BOS token id alone (paper §2): ``[BOS] + completion``."""
    backend = _LazyBackend(gen.backend, load)
    spec = {"model": base, "source": "context_free", "generator": _gen_spec(gen, gen.temperature), "bos_id": bos_id}

    def make(i: int, size: int) -> list[dict]:
        outs = backend.sample([[bos_id]] * size, gen, _seed(gen.seed, i), gen.temperature)
        return [{"ids": [bos_id] + o, "n_prompt": 0} for o in outs]

    return _chunked(store, spec, n, gen.chunk, "context-free samples", make)


def contextual(store: Store, base: Artifact, gen, n: int, *, prompts: list[list[int]], prompts_key: str,
               load: Callable) -> list[dict]:
    """The base model's own answers to the fine-tuning prompts at ``generator.contextual_temperature``
    (paper §2, CS): row ``j`` answers prompt
    ``j mod len(prompts)``; the prompt is masked, the generated answer takes the loss."""
    backend = _LazyBackend(gen.backend, load)
    spec = {"model": base, "source": "contextual", "generator": _gen_spec(gen, gen.contextual_temperature),
            "prompts": prompts_key}

    def make(i: int, size: int) -> list[dict]:
        batch = [prompts[j % len(prompts)] for j in range(i * size, (i + 1) * size)]
        outs = backend.sample(batch, gen, _seed(gen.seed, i), gen.contextual_temperature)
        return [{"ids": p + o, "n_prompt": len(p)} for p, o in zip(batch, outs)]

    return _chunked(store, spec, n, gen.chunk, "contextual samples", make)


def make_backend(name: str, model, tokenizer):
    if name == "hf":
        from forgetting.generate.hf import HFBackend

        return HFBackend(model, tokenizer)
    raise ValueError(f"generator.backend={name!r} is not available here: expected 'hf'")
