"""The BOS a context-free sample starts from: the tokenizer's, or a configured token, or a clear error."""
from __future__ import annotations

import pytest

from forgetting.models import bos_token_id, load_tokenizer


def _tok(micro_store):
    return load_tokenizer(next((micro_store / "world").glob("*/tokenizer")))


def test_bos_comes_from_the_tokenizer_or_the_config(micro_store):
    tok = _tok(micro_store)
    assert bos_token_id(tok) == tok.bos_token_id == tok.convert_tokens_to_ids("<s>")
    assert bos_token_id(tok, override_token="</s>") == tok.eos_token_id
    assert bos_token_id(tok, override_id=7) == 7


def test_tokenizer_without_bos_names_the_setting(micro_store):
    tok = _tok(micro_store)
    tok.bos_token = None
    with pytest.raises(ValueError, match="model.bos_token"):
        bos_token_id(tok)
    with pytest.raises(ValueError, match="not a token"):
        bos_token_id(tok, override_token="<|no-such-token|>")
