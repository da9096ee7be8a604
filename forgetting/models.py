"""Loading models and tokenizers, toy or hub, the same way for every stage.

    python launch.py model=toy method=base debug=micro

Weights load as safetensors only and ``trust_remote_code`` stays off unless the model config turns it on.
"""
from __future__ import annotations

from pathlib import Path

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def load_tokenizer(path: str | Path, trust_remote_code: bool = False, revision: str | None = None):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code, revision=revision)


def load_model(path: str | Path, dtype: str = "float32", trust_remote_code: bool = False,
               revision: str | None = None):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(
        str(path), dtype=DTYPES[dtype], trust_remote_code=trust_remote_code, revision=revision,
        use_safetensors=True,
    )


def bos_token_id(tokenizer, override: int | None = None) -> int:
    """The id that starts a context-free sample (paper Table 1): the tokenizer's BOS unless overridden."""
    if override is not None:
        return int(override)
    if tokenizer.bos_token_id is None:
        raise ValueError(f"tokenizer {tokenizer.name_or_path!r} declares no BOS token: "
                         "set model.bos_token_id to the id that starts a document")
    return int(tokenizer.bos_token_id)
