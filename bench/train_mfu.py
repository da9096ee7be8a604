"""(g) The train stage on a real model (SmolLM2-135M-Instruct) vs a bare loop, and its MFU on this CPU.

    python -m bench.train_mfu                      # ~3 min on 2 cores
    python -m bench.train_mfu --checkpoint DIR     # a plain Llama checkpoint instead of model=smollm2_135m

bench/train_speed.py's lockstep comparison (the same batches, optimizer, schedule and clipping on both sides, one
step of each in turn) with the smollm2 preset's trainer (trainer=smollm2: batch 8, rows of at most 96 tokens, bf16
autocast over fp32 weights, AdamW) on the CFS mix of the toy world's arithmetic and its corpus (bench/common.py),
tokenized by SmolLM2's tokenizer. Timed: steps WARMUP+1..STEPS (the one checkpoint comes after the last).

MFU = model FLOPs per second / this machine's bf16 matmul peak, both measured in this run on BENCH_THREADS
threads: 6 x (weights in matmuls) FLOPs per token plus attention's 12 x layers x hidden x sequence length (the
PaLM paper's count, appendix B), over the tokens the model computes (padding included: the useful share is
printed). Then the bare step split into forward, backward and optimizer, next to the matmul peak and the memory
bandwidth, says what bounds it.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from bench.common import (
    linear_params,
    machine,
    matmul_peak,
    memory_bandwidth,
    real_model,
    report,
    training_mix,
    workdir,
)
from bench.train_speed import lockstep, summarize

STEPS, WARMUP = 12, 2


def main() -> None:
    from forgetting.runtime import load, train_dtype

    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", help="a plain checkpoint directory instead of model=smollm2_135m")
    ap.add_argument("--steps", type=int, default=STEPS)
    args = ap.parse_args()

    c, _, world, base, tok = real_model(args.checkpoint, "trainer=smollm2", "method=cfs")
    t = c.trainer
    rows = training_mix(c, world, tok, ratio=1.0)

    def make_model():
        return load(c, base, train_dtype(c))[0]

    model = make_model()
    n_linear, cfg = linear_params(model), model.config
    print(f"machine: {machine()}")
    print(f"model {base.path}: {sum(p.numel() for p in model.parameters()):,} params, {n_linear:,} in matmuls; "
          f"{len(rows)} rows; {args.steps} steps of {t.batch_size} (<= {t.max_seq_len} tokens), bf16 {t.bf16}, "
          f"timed after {WARMUP}", flush=True)
    del model
    tmp = workdir("bench-mfu-")
    run = lockstep(make_model, tok, rows, tmp, steps=args.steps, batch=t.batch_size, lr=t.lr,
                   warmup_ratio=t.warmup_ratio, save_at=args.steps, bf16=t.bf16)
    print(f"same work: after {args.steps} steps the two models' weights differ by at most {run['drift']:.1e}")
    timed = list(range(WARMUP, args.steps))
    r = summarize(run, timed)

    peaks = {dtype: matmul_peak(dtype) for dtype in (torch.float32, torch.bfloat16)}
    peak = peaks[torch.bfloat16 if t.bf16 else torch.float32]
    bandwidth = memory_bandwidth()
    flops = 0.0
    for s in timed:  # 6N per token + attention over each step's padded width
        width = run["computed"][s] // t.batch_size
        flops += run["computed"][s] * (6 * n_linear + 12 * cfg.num_hidden_layers * cfg.hidden_size * width)
    mfu = {side: flops / sum(run[side][s][0] for s in timed) / peak for side in ("ours", "bare")}
    useful = sum(run["tokens"][s] for s in timed) / sum(run["computed"][s] for s in timed)
    print(f"matmul peak: fp32 {peaks[torch.float32] / 1e9:.0f} GFLOP/s, bf16 {peaks[torch.bfloat16] / 1e9:.0f} "
          f"GFLOP/s; memory bandwidth {bandwidth / 1e9:.1f} GB/s")
    print(f"MFU against the {'bf16' if t.bf16 else 'fp32'} peak: ours {100 * mfu['ours']:.1f}%, bare "
          f"{100 * mfu['bare']:.1f}% ({100 * useful:.0f}% of the computed tokens are not padding)", flush=True)
    parts = phases(make_model, tok.pad_token_id, rows, t.batch_size, t.bf16, t.lr)
    split = {k: parts[k] for k in ("forward", "backward", "optimizer")}
    step = sum(split.values())
    opt_bytes = 4 * 4 * sum(p.numel() for p in make_model().parameters())  # weight, grad, 2 moments (fp32), read
    width = round(statistics.median(run["computed"][s] // t.batch_size for s in timed))
    shaped = matmul_peak(torch.bfloat16 if t.bf16 else torch.float32, t.batch_size * width, cfg.hidden_size,
                         cfg.intermediate_size)
    print(f"the bare step, split ({t.batch_size} rows): " + ", ".join(
        f"{k} {v:.2f} s ({100 * v / step:.0f}%)" for k, v in split.items())
        + f"; AdamW reads >= {opt_bytes / 2**30:.1f} GiB: >= {opt_bytes / bandwidth:.2f} s at the copy bandwidth")
    print(f"profile of one bare step: matmuls {100 * parts['matmul_share']:.0f}% of the ops' time; then "
          + ", ".join(f"{k} {100 * v:.0f}%" for k, v in parts["rest"])
          + f". A matmul of the MLP's shape ({t.batch_size * width} x {cfg.hidden_size} x {cfg.intermediate_size}) "
          f"runs at {shaped / 1e9:.0f} GFLOP/s = {100 * shaped / peak:.0f}% of the peak", flush=True)
    report("train_mfu", f"train stage tok/s / bare loop tok/s (SmolLM2-135M; MFU ours {100 * mfu['ours']:.1f}% of "
           f"{'bf16' if t.bf16 else 'fp32'} peak)", r["ratio"], ">= 0.95", r["ratio"] >= 0.95,
           ratio_cpu=round(r["ratio_cpu"], 3), ours_tok_s=round(r["ours_tok_s"], 1),
           bare_tok_s=round(r["bare_tok_s"], 1), mfu_ours=round(mfu["ours"], 4), mfu_bare=round(mfu["bare"], 4),
           peak_gflops={str(k).split(".")[1]: round(v / 1e9) for k, v in peaks.items()},
           bandwidth_gbs=round(bandwidth / 1e9, 1), bare_step_s={k: round(v, 3) for k, v in split.items()},
           matmul_share=round(parts["matmul_share"], 3), mlp_shape_gflops=round(shaped / 1e9))


MATMULS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::_scaled_dot_product_flash_attention_for_cpu",
           "aten::_scaled_dot_product_flash_attention_for_cpu_backward")


def phases(make_model, pad: int, rows: list[dict], batch: int, bf16: bool, lr: float, reps: int = 3) -> dict:
    """The bare step on one batch: median seconds of its forward, backward and AdamW step, and, from a profile of
    one more step, the share of the ops' own time spent in matmuls (attention's included) and the ops that
    take most of the rest."""
    from torch.profiler import ProfilerActivity, profile

    from forgetting.data.encode import IGNORE, Collator

    model = make_model().train()
    model.config.use_cache = False
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    times: dict[str, list[float]] = {"forward": [], "backward": [], "optimizer": []}

    def step(b: dict) -> tuple[float, float, float]:
        weight, labels = b.pop("loss_weight"), b.pop("labels")
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(**b).logits[:, :-1].float()
        ce = F.cross_entropy(logits.reshape(-1, logits.size(-1)), labels[:, 1:].reshape(-1), ignore_index=IGNORE,
                             reduction="none")
        loss = (ce * weight[:, 1:].reshape(-1)).sum() / (labels[:, 1:] != IGNORE).sum()
        t1 = time.perf_counter()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        t2 = time.perf_counter()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return t1 - t0, t2 - t1, time.perf_counter() - t2

    collate = Collator(pad)
    for i in range(reps + 1):
        spent = step(collate(rows[i * batch:(i + 1) * batch]))
        if i:  # the first step allocates the optimizer state
            for k, v in zip(times, spent):
                times[k].append(v)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step(collate(rows[(reps + 1) * batch:(reps + 2) * batch]))
    ops = {e.key: e.self_cpu_time_total for e in prof.key_averages()}
    total = sum(ops.values())
    matmul = sum(v for k, v in ops.items() if k in MATMULS)
    rest = sorted(((v, k) for k, v in ops.items() if k not in MATMULS), reverse=True)[:4]
    return {**{k: statistics.median(v) for k, v in times.items()}, "matmul_share": matmul / total,
            "rest": [(k, v / total) for v, k in rest]}


if __name__ == "__main__":
    main()
