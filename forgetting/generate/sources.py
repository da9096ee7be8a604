"""Model-generated augmentation: context-free samples (CFS) and contextual answers (CS).

    pytest tests/generate/test_context_free.py tests/generate/test_sources.py

Replay rows (P) are not generated: ``forgetting.data.replay`` reads them from the pretraining corpus.

Model samples are made in chunks of ``generator.chunk`` rows; chunk ``i`` is its own artifact, sampled with seed
``(generator.seed, i)``. A request for ``n`` rows takes the first ``n`` rows of chunks ``0..``, so 10% of a
200% generation is its prefix and a ratio grid pays for its largest point once, whatever order it runs in.
Every row is training-ready token ids: ``{"ids": [...], "n_prompt": k}``, with loss on the tokens after the
first ``k`` (``k = 0``: every token).

``generator.backend`` picks the sampler (``make_backend``, from the ``BACKENDS`` registry of
``forgetting.generate.backends``): ``hf`` (``HFBackend``, the loaded model) or ``vllm`` (``VLLMBackend``, which loads
the weights itself from a ``VLLMModel``; tests/generate/test_vllm.py). Both write the same rows; the backend is part
of the chunks' key, so their samples never mix.
"""
from __future__ import annotations

import math
from dataclasses import asdict
from typing import Callable

from tqdm.auto import tqdm

from forgetting.data.jsonl import read_jsonl, write_jsonl
from forgetting.generate.backends import BACKENDS
from forgetting.store import Artifact, Store


def _chunked(store: Store, spec: dict, n: int, chunk: int, desc: str,
             make_chunk: Callable[[int, int], list[dict]]) -> list[dict]:
    """The first ``n`` rows of the chunk sequence ``spec``; ``make_chunk(i, size)`` builds a missing chunk."""
    rows: list[dict] = []
    n_chunks = math.ceil(n / chunk)
    for i in tqdm(range(n_chunks), desc=desc, unit="chunk", disable=n_chunks < 2):
        art = store.build("generate", {**spec, "index": i},
                          lambda tmp, i=i: write_jsonl(tmp / "samples.jsonl", make_chunk(i, chunk)))
        rows.extend(read_jsonl(art.path / "samples.jsonl"))
    return rows[:n]


class _LazyBackend:
    """Loads the model only when a chunk is actually missing (a cached grid never loads it). ``load()`` returns
    ``make_backend``'s (model, tokenizer) for ``gen.backend``."""

    def __init__(self, gen, load: Callable):
        self.gen, self.load, self.backend = gen, load, None

    def sample(self, prompts: list[list[int]], gen, seed: int, temperature: float) -> list[list[int]]:
        if self.backend is None:
            self.backend = make_backend(self.gen.backend, *self.load(), gen=self.gen)
        return self.backend.sample(prompts, temperature=temperature, top_p=gen.top_p,
                                   max_new_tokens=gen.max_new_tokens, seed=seed, batch_size=gen.batch_size)

    def close(self) -> None:
        if hasattr(self.backend, "close"):  # vLLM engines hold GPUs that the training stage needs next
            self.backend.close()
        self.backend = None


# vLLM knobs that choose resources, not samples (VLLMBackend refuses a max_model_len that would cut a sample)
_RESOURCES = ("tensor_parallel_size", "data_parallel_size", "gpu_memory_utilization", "max_model_len",
              "kv_cache_memory_bytes", "enforce_eager")


def _gen_spec(gen, temperature: str, model_dtype: str) -> dict:
    """The sampling settings the backend reads, under their config names (``temperature``: which of the two
    temperatures): hf batches its rows (padding and the random stream follow the batch), vLLM schedules its own
    batches with a seed per request and loads the weights in ``generator.dtype``."""
    skip = ({"temperature", "contextual_temperature"} - {temperature}) | set(_RESOURCES)
    skip |= set(BACKENDS[gen.backend].not_in_key)
    spec = {k: v for k, v in asdict(gen).items() if k not in skip}
    if "dtype" in spec and spec["dtype"] is None:
        spec["dtype"] = model_dtype  # null means model.dtype: the same samples
    return spec


def _seed(seed: int, chunk: int) -> int:
    return seed * 1_000_003 + chunk


def start_sequence(starts: list[tuple[int, float]], first: int, n: int) -> list[int]:
    """The start token ids of rows ``first .. first + n - 1`` of a sample sequence whose starts are drawn from
    ``starts`` ((id, weight) pairs) in proportion to the weights: a smooth weighted round robin over the row index,
    so every prefix of the sequence (a smaller ratio) holds each start within one row of its share."""
    if len(starts) == 1:
        return [starts[0][0]] * n
    total = sum(w for _, w in starts)
    credit = [0.0] * len(starts)
    out = []
    for j in range(first + n):
        for k, (_, w) in enumerate(starts):
            credit[k] += w
        best = max(range(len(starts)), key=lambda k: credit[k])
        credit[best] -= total
        if j >= first:
            out.append(starts[best][0])
    return out


def context_free_spec(base: Artifact, gen, model_dtype: str, bos: dict, starts: list | None = None) -> dict:
    """The sample sequence's spec (chunk ``i``'s key adds ``i``): the base model, the start token as configured
    (``bos``: model.bos_token / bos_token_id; the base's tokenizer resolves it), the start-token mixture when one is
    declared (``starts``: method.starts, as dicts) and the sampling settings."""
    spec = {"model": base, "source": "context_free", "generator": _gen_spec(gen, "temperature", model_dtype),
            "bos": bos}
    if starts:
        spec["starts"] = starts
    return spec


def context_free(store: Store, base: Artifact, gen, n: int, *, bos_id: int, load: Callable,
                 model_dtype: str = "float32", bos: dict | None = None,
                 starts: list[tuple[int, float]] | None = None, starts_spec: list | None = None) -> list[dict]:
    """``n`` samples of the base model from a start token alone (paper §2): ``[start] + completion``, the start
    recorded as ``start``. The start is the BOS id ``bos_id`` (``bos``: the start token as configured, which resolved
    to it; default: the tokenizer's BOS), or, given ``starts`` ((id, weight) pairs resolved from ``starts_spec``,
    method.starts), each row's own from that mixture (:func:`start_sequence`)."""
    backend = _LazyBackend(gen, load)
    spec = context_free_spec(base, gen, model_dtype, bos or {"token": None, "id": None}, starts_spec)
    mixture = starts if starts_spec else [(bos_id, 1.0)]

    def make(i: int, size: int) -> list[dict]:
        first = start_sequence(mixture, i * size, size)
        outs = backend.sample([[s] for s in first], gen, _seed(gen.seed, i), gen.temperature)
        return [{"ids": [s] + o, "n_prompt": 0, "start": s} for s, o in zip(first, outs)]

    try:
        return _chunked(store, spec, n, gen.chunk, "context-free samples", make)
    finally:
        backend.close()


def contextual_spec(base: Artifact, gen, model_dtype: str, prompts_key: str) -> dict:
    return {"model": base, "source": "contextual",
            "generator": _gen_spec(gen, "contextual_temperature", model_dtype), "prompts": prompts_key}


def contextual(store: Store, base: Artifact, gen, n: int, *, prompts: list[list[int]], prompts_key: str,
               load: Callable, model_dtype: str = "float32") -> list[dict]:
    """The base model's own answers to the fine-tuning prompts at ``generator.contextual_temperature``
    (paper §2, CS): row ``j`` answers prompt ``j mod len(prompts)``; the prompt is masked, the generated answer
    takes the loss."""
    backend = _LazyBackend(gen, load)
    spec = contextual_spec(base, gen, model_dtype, prompts_key)

    def make(i: int, size: int) -> list[dict]:
        batch = [prompts[j % len(prompts)] for j in range(i * size, (i + 1) * size)]
        outs = backend.sample(batch, gen, _seed(gen.seed, i), gen.contextual_temperature)
        return [{"ids": p + o, "n_prompt": len(p)} for p, o in zip(batch, outs)]

    try:
        return _chunked(store, spec, n, gen.chunk, "contextual samples", make)
    finally:
        backend.close()


def make_backend(name: str, model, tokenizer, gen=None):
    """The sampler ``generator.backend=name`` names (``BACKENDS[name].start``): ``model`` is what the backend's
    ``model()`` made (``forgetting.runtime.generation_model``); ``gen`` (the generator config) sets its resources."""
    return BACKENDS[name].start(model, tokenizer, gen)
