"""Pretraining the toy world's tiny Llama base model on its corpus, on CPU, as one or more cached segments.

    python launch.py method=base                                  # cosine AdamW (~3 min), then evaluates the base
    python launch.py method=base model.pretrain.rho=0.05          # SAM over the whole run (paper 003 §3.2)
    python launch.py method=base model.pretrain.schedule=wsd model.pretrain.rho=0.05 model.pretrain.sam_phase=decay

A run is a list of segments (:func:`segments`), each a stage of its own: the first from a fresh init
(``pretrain``), every further one continuing its parent's weights *and AdamW state* (``continue``). Cosine is one
segment; warmup–stable–decay (paper 003 App. A.2.2) is the stable prefix (warmup, then a constant lr) and the
decay (linear over ``decay_ratio`` of the steps, to ``decay_floor`` × lr at its last step: 10%, paper 003 §3.3), so
bases that differ only in their decay — AdamW or SAM there — share the stored prefix. SAM (``rho > 0``) runs in every
segment, or only in the decay (``sam_phase: decay``). The result is an ordinary HF checkpoint (safetensors +
tokenizer), plus the optimizer state (``optimizer.pt``) its continuations start from. ``model.midtrain`` (any base:
toy, GGUF, hub) is one more ``continue`` segment, on the toy corpus or a local jsonl streamed as packed rows
(forgetting/data/stream.py), in one or several processes (paper 003's mid-training of OLMo-2-1B with SAM).
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch

from forgetting.config import ADAM_BETA2, MidtrainConfig, ModelConfig, PretrainConfig, TrainerConfig
from forgetting.data.encode import encode_text
from forgetting.data.jsonl import read_jsonl
from forgetting.data.stream import PackedCorpus
from forgetting.errors import ConfigError
from forgetting.models import load_tokenizer
from forgetting.runtime import load, tokenizer_of
from forgetting.toy.world import ToyWorld, reweighted_corpus
from forgetting.train.sam import SamStep
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
    common = {"batch_size": p.batch_size, "grad_accum": 1, "seq_len": p.seq_len, "weight_decay": p.weight_decay,
              "bf16": False, "seed": seed, **_beta2(p.adam_beta2)}
    if p.schedule == "cosine":
        return [{**common, "steps": p.steps, "lr": p.lr, "scheduler": "cosine",
                 "warmup_steps": round(p.warmup_ratio * p.steps), "rho": p.rho}]
    if p.schedule == "constant":  # checkpoints of one run: each segment continues the one before
        n = p.segment_steps or p.steps
        warmup = round(p.warmup_ratio * n)  # the first segment's: a longer run shares it
        return [{**common, "steps": n, "lr": p.lr, "scheduler": "constant_with_warmup" if i == 0 else "constant",
                 "warmup_steps": warmup if i == 0 else 0, "rho": p.rho} for i in range(p.steps // n)]
    decay = max(1, round(p.decay_ratio * p.steps))
    stable = p.steps - decay
    floor = {"min_lr_ratio": p.decay_floor} if p.decay_floor > 0 else {}  # 0: the keys of bases decayed to 0
    return [{**common, "steps": stable, "lr": p.lr, "scheduler": "constant_with_warmup",
             "warmup_steps": round(p.warmup_ratio * p.steps), "rho": p.rho if p.sam_phase == "all" else 0.0},
            {**common, "steps": decay, "lr": p.lr, "scheduler": "linear", "warmup_steps": 0, "rho": p.rho, **floor}]


def schedule(seg: dict) -> tuple[str, dict]:
    """HF's scheduler name and arguments for a segment: its own ``scheduler``, or, for a linear decay to a floor
    (``min_lr_ratio``), HF's warmup_stable_decay with no warmup or stable phase whose decay reaches the floor at the
    segment's last step (HF's decay reaches it one step after its last decay step, hence steps − 1)."""
    if seg["scheduler"] == "linear" and seg.get("min_lr_ratio"):
        return "warmup_stable_decay", {"num_stable_steps": 0, "num_decay_steps": max(seg["steps"] - 1, 0),
                                       "decay_type": "linear", "min_lr_ratio": seg["min_lr_ratio"]}
    return seg["scheduler"], {}


def midtrain_segment(m: MidtrainConfig, seed: int) -> dict:
    """``model.midtrain`` as a segment (the same fields as the toy pretraining's, plus how it reads its corpus and
    runs: named only when not the defaults of the segments made before they existed)."""
    return {"steps": m.steps, "lr": m.lr, "scheduler": m.scheduler, "warmup_steps": round(m.warmup_ratio * m.steps),
            "rho": m.rho, "batch_size": m.batch_size, "grad_accum": m.grad_accum, "seq_len": m.seq_len,
            "weight_decay": m.weight_decay, "bf16": m.bf16, "seed": seed, **_beta2(m.adam_beta2),
            **({"packing": True} if m.packing else {}),
            **({"num_processes": m.num_processes} if m.num_processes > 1 else {}),
            **({"deepspeed": m.deepspeed} if m.deepspeed else {})}


def _beta2(beta2: float) -> dict:
    """AdamW's β2 in a segment's key only when it is not the default (keys made before it existed stay valid)."""
    return {} if beta2 == ADAM_BETA2 else {"adam_beta2": beta2}


def chain(cfg: ModelConfig, world, seed: int) -> list[tuple[str, dict]]:
    """(stage, spec) of each segment; a continuation's spec holds its parent's (stage, spec), hence its key."""
    out = [("pretrain", {"world": world, "arch": asdict(cfg.arch), "segment": None})]
    for i, seg in enumerate(segments(cfg.pretrain, seed)):
        if i == 0:
            out[0][1]["segment"] = seg
        else:
            out.append(("continue", {"parent": list(out[-1]), "corpus": {"world": world}, "segment": seg}))
    return out


def corpus_texts(corpus: dict | None, world, seed: int = 0) -> list[str]:
    """The documents a segment trains on: the toy world's corpus (as many new documents with its sentence kinds
    reweighted, given a ``mix``), or the first ``limit`` rows of a local jsonl."""
    if corpus is None or "world" in corpus:
        texts = ToyWorld(world).corpus()
        if corpus and corpus.get("mix"):

            return reweighted_corpus(Path(world.path), corpus["mix"], len(texts), seed)
        return texts
    rows = read_jsonl(Path(corpus["path"]).expanduser())
    return [r["text"] for r in rows[:corpus["limit"]] if r.get("text")]


def segment_model(c, parent):
    """The model a continuation trains: its parent's weights in fp32 (a function, so that each training process
    loads its own; under ZeRO-3, already partitioned)."""

    return load(c, parent, dtype="float32")[0]


def run_segment(c, world, spec: dict, out: Path, work: Path, parent) -> dict:
    """Train one segment into ``out``: from a fresh toy init (``parent`` None), or from ``parent``'s weights (an
    artifact, or the hub model) and, when it saved one, its optimizer state. A ``packing`` segment streams its corpus
    as packed rows (``forgetting.data.stream``) and may run in several processes (``num_processes``, ``deepspeed``)."""
    from functools import partial


    seg = spec["segment"]
    torch.manual_seed(seg["seed"])
    processes, deepspeed = seg.get("num_processes", 1), seg.get("deepspeed") or {}
    if parent is None:
        tokenizer = load_tokenizer(ToyWorld(world).tokenizer_dir)
        model = make_model(c.model, tokenizer)
    else:
        tokenizer = tokenizer_of(c, parent)
        model = partial(segment_model, c, parent) if processes > 1 or deepspeed else segment_model(c, parent)
    if seg.get("packing"):
        rows = packed_corpus(spec.get("corpus"), world, tokenizer, seg)
    else:
        texts = corpus_texts(spec.get("corpus"), world, seg["seed"])
        rows = [encode_text(tokenizer, text, seg["seq_len"]) for text in texts]
    # every setting stated: the pretrained model must not follow the fine-tuning trainer's defaults
    scheduler, scheduler_kwargs = schedule(seg)
    t = TrainerConfig(name="pretrain", lr=seg["lr"], batch_size=seg["batch_size"], grad_accum=seg["grad_accum"],
                      warmup_ratio=seg["warmup_steps"] / seg["steps"], scheduler=scheduler,
                      scheduler_kwargs=scheduler_kwargs,
                      weight_decay=seg["weight_decay"], adam_beta2=seg.get("adam_beta2", ADAM_BETA2),
                      save_steps=max(50, seg["steps"] // 4), logging_steps=10, bf16=seg["bf16"],
                      gradient_checkpointing=False, packing=False, num_processes=processes, deepspeed=deepspeed)
    hooks = [SamStep(seg["rho"])] if seg["rho"] > 0 else []
    state = Path(parent.path) / "optimizer.pt" if parent is not None and parent.stage != "hub" else None
    state = state if state is not None and state.exists() else None
    if deepspeed and state is not None:
        raise ConfigError(f"model.midtrain.deepspeed is invalid for a base with a stored optimizer state ({state}): "
                          "expected null, so that the continuation carries the parent's AdamW state (ZeRO "
                          "partitions it; use model.midtrain.num_processes for data parallelism)")
    return train(model, tokenizer, rows, out, work, t, steps=seg["steps"], seed=seg["seed"], hooks=hooks,
                 init_optimizer=state, keep_optimizer=not deepspeed,
                 use_cpu=c.device == "cpu", save_dtype=spec.get("dtype"))


def packed_corpus(corpus: dict | None, world, tokenizer, seg: dict):
    """The segment's corpus as a stream of packed rows (``forgetting.data.stream.PackedCorpus``)."""

    tok_dir = getattr(tokenizer, "name_or_path", None)
    if not tok_dir or not Path(tok_dir).is_dir():
        raise ValueError(f"packed corpus: the tokenizer {tok_dir!r} is not a local directory")
    if corpus is None or "world" in corpus:
        mix = tuple(sorted(corpus["mix"].items())) if corpus and corpus.get("mix") else None
        return PackedCorpus(tokenizer=tok_dir, seq_len=seg["seq_len"], world=str(world.path), mix=mix,
                            seed=seg["seed"])
    return PackedCorpus(tokenizer=tok_dir, seq_len=seg["seq_len"], path=str(Path(corpus["path"]).expanduser()),
                        limit=corpus["limit"])
