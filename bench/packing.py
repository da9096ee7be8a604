"""(b) The share of non-pad tokens per batch, with and without sequence packing (``trainer.packing``), and what
packing does to training speed.

    python -m bench.packing                          # ~1 min on 2 cores
    python -m bench.packing --samples samples.jsonl  # with real context-free samples (a generate artifact's file)

Rows: the toy world's training mix for CFS at ratio 1.0 (downstream rows + as many context-free rows; without
``--samples`` the world's pretraining documents stand in for the base model's samples, bench/common.py), in
batches of trainer.batch_size (32), over one shuffled epoch. Share = non-pad tokens / tokens in the batch tensor.
Speed: a bare training step (forward, weighted loss, backward, AdamW) of the toy model on the same batch padded,
then packed, alternating step by step; the median per-step ratio of tokens/s. Target: >= 95% non-pad with packing.
"""
from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch
import torch.nn.functional as F

from bench.common import machine, now, quartiles, report, since, toy_world, training_mix, workdir

SPEED_STEPS, WARMUP = 24, 2


def shares(rows: list[dict], batch_size: int, packing: bool, pad: int) -> list[float]:
    from forgetting.data.encode import Collator

    collate = Collator(pad, packing=packing)
    out = []
    for s in range(0, len(rows) - batch_size + 1, batch_size):
        batch = rows[s:s + batch_size]
        out.append(sum(len(r["input_ids"]) for r in batch) / collate(batch)["input_ids"].numel())
    return out


def main() -> None:
    from forgetting.data.encode import IGNORE, Collator
    from forgetting.train.pretrain import make_model

    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=Path, help="a samples.jsonl of context-free samples ({'ids': [...]} rows)")
    args = ap.parse_args()
    tmp = workdir("bench-packing-")
    c, _, world, tok = toy_world(tmp / "store", "method=cfs")
    bs, pad = c.trainer.batch_size, tok.pad_token_id
    print(f"machine: {machine()}")
    rows = None
    for ratio in (0.0, 1.0, 2.0):
        mix = training_mix(c, world, tok, ratio=ratio, samples=args.samples)
        plain, packed = shares(mix, bs, False, pad), shares(mix, bs, True, pad)
        lengths = [len(r["input_ids"]) for r in mix]
        print(f"ratio {ratio}: {len(mix)} rows of {min(lengths)}-{max(lengths)} tokens (mean "
              f"{statistics.mean(lengths):.0f}); non-pad share per batch of {bs}: padded "
              f"{statistics.mean(plain):.1%} (min {min(plain):.1%}), packed {statistics.mean(packed):.1%} "
              f"(min {min(packed):.1%})", flush=True)
        if ratio == c.method.ratio:
            rows, share_plain, share_packed = mix, statistics.mean(plain), statistics.mean(packed)

    models = []
    for _ in range(2):
        torch.manual_seed(0)
        m = make_model(c.model, tok).train()
        m.config.use_cache = False  # as the Trainer sets it: packed positions are only honoured without a KV cache
        models.append((m, torch.optim.AdamW(m.parameters(), lr=1e-3, weight_decay=0.0)))

    def step(model, opt, batch) -> tuple[float, float]:
        t = now()
        weight, labels = batch.pop("loss_weight"), batch.pop("labels")
        logits = model(**batch).logits[:, :-1].float()
        ce = F.cross_entropy(logits.reshape(-1, logits.size(-1)), labels[:, 1:].reshape(-1), ignore_index=IGNORE,
                             reduction="none")
        ((ce * weight[:, 1:].reshape(-1)).sum() / (labels[:, 1:] != IGNORE).sum()).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return since(t)

    ratios, ratios_cpu, shapes = [], [], []
    for s in range(SPEED_STEPS):
        batch = rows[s * bs:(s + 1) * bs]
        padded, packed = Collator(pad)(batch), Collator(pad, packing=True)(batch)
        shapes.append((tuple(padded["input_ids"].shape), tuple(packed["input_ids"].shape)))
        t_padded, t_packed = step(*models[0], padded), step(*models[1], packed)
        if s >= WARMUP:
            ratios.append(t_padded[0] / t_packed[0])
            ratios_cpu.append(t_padded[1] / t_packed[1])
    speed = statistics.median(ratios)
    with torch.no_grad():
        drift = max(float((p - q).abs().max()) for p, q in zip(models[0][0].parameters(), models[1][0].parameters()))
    print(f"batch shapes padded -> packed, e.g. {shapes[WARMUP:WARMUP + 3]}")
    print(f"training speed, packed / padded (tokens/s, median of {len(ratios)} alternating steps): {speed:.2f}x "
          f"(quartiles {quartiles(ratios)}; by CPU time {statistics.median(ratios_cpu):.2f}x); the two models' "
          f"weights differ by at most {drift:.1e} after {SPEED_STEPS} steps")
    report("packing", f"non-pad share with packing (padded: {share_plain:.1%})", share_packed, ">= 0.95",
           share_packed >= 0.95, padded_share=round(share_plain, 4), speedup=round(speed, 3),
           cfs_rows="samples" if args.samples else "corpus stand-in")


if __name__ == "__main__":
    main()
