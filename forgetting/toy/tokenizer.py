"""Byte-level BPE tokenizer for the toy world, with real BOS/EOS/PAD tokens.

    pytest tests/data/test_encode.py

Like Llama's, it prepends BOS when asked for special tokens, so ``tokenizer(text)`` starts with BOS and
``tokenizer(text, add_special_tokens=False)`` does not; EOS is appended by the data code where a document ends.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

BOS, EOS, PAD = "<s>", "</s>", "<pad>"


def train_tokenizer(texts: list[str], vocab_size: int, bos: str = BOS, eos: str = EOS, pad: str = PAD,
                    model_max_length: int = 1024) -> PreTrainedTokenizerFast:
    """Also builds the tiny R1-Distill-shaped test checkpoint's tokenizer (other special tokens, pad = EOS)."""
    # imported here: transformers' tokenizer classes take a second to import, which only building a world needs
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(dict.fromkeys([pad, bos, eos])),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    bos_id = tok.token_to_id(bos)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, bos_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=bos, eos_token=eos, pad_token=pad, padding_side="right",
        model_max_length=model_max_length,
    )
