"""The services a run's stages, method parts and evaluators share: loading a stored model and its tokenizer,
encoding prompts and examples in the dataset's format, the dtype training loads in, and the train stage's
inputs (``Inputs``). Below ``forgetting.pipeline``, which builds stages from them; parts and evaluators reach the
pipeline only through what it hands them (``Inputs.stages``), never by importing it.
"""
from __future__ import annotations

import gc
import logging
from dataclasses import dataclass
from typing import Any

import torch

from forgetting.data.datasets import downstream_spec, load_downstream
from forgetting.data.encode import IGNORE, encode_pair, encode_prompt
from forgetting.data.formats import chat_prompt_ids, encode_chat
from forgetting.errors import ConfigError
from forgetting.generate.backends import BACKENDS
from forgetting.models import bos_token_id, load_model, load_tokenizer
from forgetting.store import Artifact, Store, key_of

log = logging.getLogger("forgetting")


@dataclass
class Inputs:
    """What a run's train stage reads: the config, the store, the base model and the toy world, and the pipeline's
    stages (``stages``: what a part that builds another model's artifacts calls, e.g. recycling's source fine-tune;
    given by ``forgetting.pipeline``, which this layer does not import). The method's parts take what they need
    from it (``forgetting.parts``); nothing is loaded until asked for."""

    c: Any
    store: Store
    base: Artifact
    world: Artifact | None
    stages: Any = None

    def tokenizer(self):
        return tokenizer_of(self.c, self.base)

    def generation_model(self):
        return generation_model(self.c, self.base)

    def bos_id(self) -> int:
        return bos_token_id(self.tokenizer(), self.c.model.bos_token_id, self.c.model.bos_token)

    def downstream(self) -> list[dict]:
        if not hasattr(self, "_down"):
            self._down = load_downstream(self.c.dataset, self.world)
        return self._down

    def data_spec(self) -> dict:
        return downstream_spec(self.c.dataset, self.world)

    def prompts_key(self) -> str:
        return key_of("prompts", {"data": self.data_spec()})  # the tokenizer is the base's: in the samples' key

    def prompts(self) -> list[list[int]]:
        tokenizer = self.tokenizer()
        return [prompt_ids(tokenizer, self.c, r["query"]) for r in self.downstream()]




def prompt_ids(tokenizer, c: Any, query: str) -> list[int]:
    """What the model is given to answer: the plain template (MetaMathQA) or the chat template (MedReason)."""
    if c.dataset.format == "chat":
        return chat_prompt_ids(tokenizer, query)
    return encode_prompt(tokenizer, c.dataset.prompt_template.format(query=query))


def encode_example(tokenizer, c: Any, query: str, response: str) -> dict:
    if c.dataset.format == "chat":
        return encode_chat(tokenizer, query, response, c.trainer.max_seq_len)
    return encode_pair(tokenizer, c.dataset.prompt_template.format(query=query), response, c.trainer.max_seq_len)




def check_answers_fit(c: Any, rows: list[dict], what: str = "downstream rows") -> None:
    """Encoded rows whose prompt fills ``trainer.max_seq_len`` have no answer token to learn or score: refused when
    that is every row, a warning otherwise (``launch.py`` checks the shortest and longest prompts before any stage,
    where the tokenizer loads)."""
    empty = sum(all(label == IGNORE for label in r["labels"]) for r in rows)
    if empty == len(rows):
        raise ConfigError(f"trainer.max_seq_len={c.trainer.max_seq_len} is invalid: expected room for an answer "
                          f"token after the prompt: none of the {len(rows)} {what} has one")
    if empty:
        log.warning("%d of %d %s have no answer token within trainer.max_seq_len=%d (their prompts fill it): they "
                    "add nothing", empty, len(rows), what, c.trainer.max_seq_len)


def train_dtype(c: Any) -> str:
    """The dtype the train stage loads the base model in. Full fine-tuning outside DeepSpeed keeps fp32 master
    weights whatever ``model.dtype`` is: at lr 5e-6 an Adam step is far below half a bf16 ulp of most weights, so
    pure bf16 training rounds most updates away; ``trainer.bf16`` then means bf16 autocast compute. DeepSpeed's bf16
    mode keeps its own fp32 masters, and an adapter over frozen base weights (LoRA; peft keeps the adapters in fp32)
    leaves them as they are: both load in ``model.dtype``. The fine-tuned checkpoint is saved in ``model.dtype`` in
    every case."""
    if c.trainer.deepspeed or c.method.parts()["adapter"].frozen_base:
        return c.model.dtype
    return "float32"




def free_gpu_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def load(c: Any, art: Artifact, dtype: str | None = None):
    """(model, tokenizer) of an artifact, or of the hub model when ``art`` is the hub reference; the weights in
    ``dtype`` (default ``model.dtype``)."""
    return load_weights(c, art, dtype), tokenizer_of(c, art)


def load_weights(c: Any, art: Artifact, dtype: str | None = None):
    """:func:`load`'s model alone, on ``device``."""
    path, revision = weights_of(c, art)
    model = load_model(path, dtype or c.model.dtype, c.model.trust_remote_code, revision)
    return model.to(c.device) if c.device != "cpu" else model


def weights_of(c: Any, art: Artifact) -> tuple[Any, str | None]:
    """(path, revision) of an artifact's weights: its directory, or the hub model's id and revision."""
    return (c.model.path, c.model.revision) if art.stage == "hub" else (art.path, None)


def generation_model(c: Any, art: Artifact):
    """What ``generator.backend`` samples from, with the tokenizer: the backend's ``model`` (the loaded model for
    hf; for vllm only where the weights are, a ``VLLMModel``, since vLLM loads them itself, in its own processes)."""
    sampled = BACKENDS[c.generator.backend].model(c, *weights_of(c, art), lambda: load_weights(c, art))
    return sampled, tokenizer_of(c, art)


def tokenizer_of(c: Any, art: Artifact):
    if art.stage == "hub":
        return load_tokenizer(c.model.path, c.model.trust_remote_code, c.model.revision)
    return load_tokenizer(art.path)
