"""Pretraining the toy world's tiny Llama base model on its corpus, on CPU.

    python launch.py method=base             # builds the world, pretrains (~3 min), evaluates the base model

The result is an ordinary HF checkpoint (safetensors + tokenizer) that ``AutoModelForCausalLM`` loads.
"""
from __future__ import annotations

from pathlib import Path

import torch

from forgetting.config import ModelConfig, TrainerConfig
from forgetting.data.encode import encode_text
from forgetting.data.jsonl import read_jsonl
from forgetting.train.trainer import train


def make_model(cfg: ModelConfig, tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    a = cfg.arch
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=a.hidden_size, intermediate_size=a.intermediate_size,
        num_hidden_layers=a.num_layers, num_attention_heads=a.num_heads, num_key_value_heads=a.num_heads,
        max_position_embeddings=a.max_position_embeddings, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return LlamaForCausalLM(config)


def pretrain(cfg: ModelConfig, world_dir: Path, out: Path, work: Path, seed: int) -> dict:
    from forgetting.models import load_tokenizer

    tokenizer = load_tokenizer(world_dir / "tokenizer")
    torch.manual_seed(seed)
    model = make_model(cfg, tokenizer)
    p = cfg.pretrain
    rows = [encode_text(tokenizer, r["text"], p.seq_len) for r in read_jsonl(world_dir / "corpus.jsonl")]
    # every setting stated: the pretrained model must not follow the fine-tuning trainer's defaults
    t = TrainerConfig(name="pretrain", lr=p.lr, batch_size=p.batch_size, grad_accum=1, warmup_ratio=p.warmup_ratio,
                      scheduler="cosine", weight_decay=0.01, save_steps=max(50, p.steps // 4), logging_steps=10,
                      bf16=False, gradient_checkpointing=False, packing=False, num_processes=1, deepspeed=None)
    return train(model, tokenizer, rows, out, work, t, steps=p.steps, seed=seed)
