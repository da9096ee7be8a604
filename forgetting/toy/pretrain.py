"""Pretraining the toy world's tiny Llama base model on its corpus, on CPU, as one or more cached segments.

    python launch.py method=base                                  # cosine AdamW (~3 min), then evaluates the base
    python launch.py method=base model.pretrain.rho=0.05          # SAM over the whole run (paper 003 §3.2)
    python launch.py method=base model.pretrain.schedule=wsd model.pretrain.rho=0.05 model.pretrain.sam_phase=decay

A run is a list of segments (:func:`segments`), each a stage of its own: the first from a fresh init
(``pretrain``), every further one continuing its parent's weights *and AdamW state* (``continue``). Cosine is one
segment; warmup–stable–decay (paper 003 App. A.2.2) is the stable prefix (warmup, then a constant lr) and the
decay (linear to 0 over ``decay_ratio`` of the steps), so bases that differ only in their decay — AdamW or SAM
there — share the stored prefix. SAM (``rho > 0``) runs in every segment, or only in the decay
(``sam_phase: decay``). The result is an ordinary HF checkpoint (safetensors + tokenizer), plus the optimizer state
(``optimizer.pt``) its continuations start from.
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch

from forgetting.config import ModelConfig, PretrainConfig, TrainerConfig
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


def segments(p: PretrainConfig, seed: int) -> list[dict]:
    """The run as segments: what each trains with (its key's content). The first starts from a fresh init."""
    common = {"batch_size": p.batch_size, "seq_len": p.seq_len, "weight_decay": p.weight_decay, "seed": seed}
    if p.schedule == "cosine":
        return [{**common, "steps": p.steps, "lr": p.lr, "scheduler": "cosine",
                 "warmup_steps": round(p.warmup_ratio * p.steps), "rho": p.rho}]
    decay = max(1, round(p.decay_ratio * p.steps))
    stable = p.steps - decay
    return [{**common, "steps": stable, "lr": p.lr, "scheduler": "constant_with_warmup",
             "warmup_steps": round(p.warmup_ratio * p.steps), "rho": p.rho if p.sam_phase == "all" else 0.0},
            {**common, "steps": decay, "lr": p.lr, "scheduler": "linear", "warmup_steps": 0, "rho": p.rho}]


def chain(cfg: ModelConfig, world, seed: int) -> list[tuple[str, dict]]:
    """(stage, spec) of each segment; a continuation's spec holds its parent's (stage, spec), hence its key."""
    out = [("pretrain", {"world": world, "arch": asdict(cfg.arch), "segment": None})]
    for i, seg in enumerate(segments(cfg.pretrain, seed)):
        if i == 0:
            out[0][1]["segment"] = seg
        else:
            out.append(("continue", {"parent": list(out[-1]), "corpus": world, "segment": seg}))
    return out


def run_segment(cfg: ModelConfig, world_dir: Path, seg: dict, out: Path, work: Path, parent: Path | None) -> dict:
    """Train one segment into ``out``: from a fresh init (``parent`` None) or from ``parent``'s weights and
    optimizer state."""
    from forgetting.models import load_tokenizer
    from forgetting.parts.sam import SAM, SamKnobs

    tokenizer = load_tokenizer(world_dir / "tokenizer")
    torch.manual_seed(seg["seed"])
    if parent is None:
        model = make_model(cfg, tokenizer)
    else:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(str(parent), dtype=torch.float32)
    rows = [encode_text(tokenizer, r["text"], seg["seq_len"]) for r in read_jsonl(world_dir / "corpus.jsonl")]
    # every setting stated: the pretrained model must not follow the fine-tuning trainer's defaults
    t = TrainerConfig(name="pretrain", lr=seg["lr"], batch_size=seg["batch_size"], grad_accum=1,
                      warmup_ratio=seg["warmup_steps"] / seg["steps"], scheduler=seg["scheduler"],
                      weight_decay=seg["weight_decay"], save_steps=max(50, seg["steps"] // 4), logging_steps=10,
                      bf16=False, gradient_checkpointing=False, packing=False, num_processes=1, deepspeed=None)
    hooks = [SAM(SamKnobs(rho=seg["rho"]))] if seg["rho"] > 0 else []
    init_optimizer = parent / "optimizer.pt" if parent is not None and (parent / "optimizer.pt").exists() else None
    return train(model, tokenizer, rows, out, work, t, steps=seg["steps"], seed=seg["seed"], hooks=hooks,
                 init_optimizer=init_optimizer, keep_optimizer=True)
