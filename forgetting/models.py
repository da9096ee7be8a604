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


def bos_token_id(tokenizer, override_id: int | None = None, override_token: str | None = None) -> int:
    """The id a context-free sample starts from (paper Table 1): the tokenizer's BOS unless overridden."""
    if override_id is not None:
        return int(override_id)
    if override_token is not None:
        ids = tokenizer.convert_tokens_to_ids([override_token])
        if not ids or ids[0] is None or ids[0] == tokenizer.unk_token_id:
            raise ValueError(f"model.bos_token={override_token!r} is not a token of {tokenizer.name_or_path!r}")
        return int(ids[0])
    if tokenizer.bos_token_id is None:
        raise ValueError(f"tokenizer {tokenizer.name_or_path!r} declares no BOS token: set model.bos_token "
                         "(e.g. '<|endoftext|>' for OLMo-1B) or model.bos_token_id")
    return int(tokenizer.bos_token_id)
