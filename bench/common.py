"""What every benchmark shares: an offline sandbox, the composed config, the toy world and its rows, interleaved
A/B timing, and the one-line result that ``python -m bench`` collects into its summary table.

    python -m bench.train_speed

Timings on a shared 2-core machine swing 2x when another process runs, so both sides of a ratio are measured in
the same process, alternating A B A B ..., and the median of the per-pair ratios is reported. Torch runs on
``BENCH_THREADS`` threads (default 1: with another job on the machine, 2 threads oversubscribe the cores).
"""
from __future__ import annotations

import atexit
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]


def workdir(prefix: str) -> Path:
    """A temp directory, removed when the benchmark exits."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


SANDBOX = workdir("forgetting-bench-")
for _var in ("HF_HOME", "XDG_CACHE_HOME", "TORCH_EXTENSIONS_DIR", "WANDB_DIR", "MPLCONFIGDIR"):  # as tests/conftest.py
    os.environ[_var] = str(SANDBOX / _var.lower())
os.environ.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", WANDB_MODE="offline", TOKENIZERS_PARALLELISM="false",
                  TRANSFORMERS_VERBOSITY="error", TQDM_DISABLE="1", VLLM_LOGGING_LEVEL="ERROR")
THREADS = int(os.environ.get("BENCH_THREADS", "1"))
os.environ.setdefault("OMP_NUM_THREADS", str(THREADS))

import torch  # noqa: E402  (after the environment above)

torch.set_num_threads(THREADS)
RESULT_PREFIX = "BENCH-RESULT "


def compose(*overrides: str):
    """The config ``launch.py`` would run with these overrides, validated into the typed object."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from forgetting.compose import register, validate

    register()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return validate(hydra_compose(config_name="config", overrides=list(overrides)))


def toy_world(store_dir: Path, *overrides: str):
    """(config, store, world artifact, tokenizer) of the toy world (default unless ``debug=micro``), built in
    ``store_dir`` by the pipeline's own world stage."""
    from forgetting.models import load_tokenizer
    from forgetting.pipeline import world_stage
    from forgetting.store import Store

    c = compose(f"store_dir={store_dir}", *overrides)
    store = Store(store_dir)
    world = world_stage(c, store)
    return c, store, world, load_tokenizer(world.path / "tokenizer")


def training_mix(c, world, tokenizer, ratio: float = 1.0, seed: int = 0, samples: Path | None = None) -> list[dict]:
    """The rows CFS trains on: the downstream rows encoded as the train stage encodes them, plus ``ratio`` times
    as many context-free rows, shuffled. The context-free rows are the generate stage's samples when a
    ``samples`` jsonl is given ({"ids": ...} rows), else the world's pretraining documents (what the base model
    was trained to write: the stand-in for its samples when no pretrained model is at hand)."""
    from forgetting.data.datasets import load_downstream
    from forgetting.data.encode import encode_ids, encode_text
    from forgetting.data.jsonl import read_jsonl
    from forgetting.runtime import encode_example

    down = load_downstream(c.dataset, world)
    rows = [encode_example(tokenizer, c, r["query"], r["response"]) for r in down]
    n = round(len(rows) * ratio)
    rng = random.Random(seed)
    if samples is not None:
        cfs = [encode_ids(r["ids"], c.trainer.max_seq_len, c.method.weight, r["n_prompt"])
               for r in read_jsonl(samples)][:n]
    else:
        docs = rng.sample(read_jsonl(world.path / "corpus.jsonl"), n)
        cfs = [encode_text(tokenizer, r["text"], c.trainer.max_seq_len, c.method.weight) for r in docs]
    rows += cfs
    rng.shuffle(rows)
    return rows


def now() -> tuple[float, float]:
    """(wall, CPU) seconds. CPU time of this process barely moves when another process takes the cores (wall time
    swings 2x), so each benchmark prints both; the verdict is on wall time."""
    return time.perf_counter(), time.process_time()


def since(t0: tuple[float, float]) -> tuple[float, float]:
    t1 = now()
    return t1[0] - t0[0], t1[1] - t0[1]


def interleaved(a: Callable[[], tuple[int, tuple[float, float]]], b: Callable[[], tuple[int, tuple[float, float]]],
                reps: int, label: tuple[str, str] = ("A", "B")) -> dict:
    """Run ``a`` and ``b`` alternately ``reps`` times; each returns (items made, (wall s, CPU s)). Returns the
    median rates and the medians of the per-pair ratios of rates a/b, by wall and by CPU time."""
    ra, rb = [], []
    for i in range(reps):
        for f, r in ((a, ra), (b, rb)):
            n, (wall, cpu) = f()
            r.append((n / wall, n / cpu))
        print(f"  rep {i + 1}/{reps}: {label[0]} {ra[-1][0]:,.0f}/s  {label[1]} {rb[-1][0]:,.0f}/s  ratio "
              f"{ra[-1][0] / rb[-1][0]:.3f} (by CPU time {ra[-1][1] / rb[-1][1]:.3f})", flush=True)
    wall = [x[0] / y[0] for x, y in zip(ra, rb)]
    cpu = [x[1] / y[1] for x, y in zip(ra, rb)]
    out = {"ratio": statistics.median(wall), "ratio_cpu": statistics.median(cpu),
           "a": statistics.median(x[0] for x in ra), "b": statistics.median(x[0] for x in rb)}
    print(f"  median ratio {out['ratio']:.3f} (quartiles {quartiles(wall)}); by CPU time {out['ratio_cpu']:.3f} "
          f"(quartiles {quartiles(cpu)})", flush=True)
    return out


def quartiles(xs: list[float]) -> str:
    return " ".join(f"{q:.3f}" for q in statistics.quantiles(xs, n=4)) if len(xs) > 1 else "-"


def report(name: str, measured: str, ratio: float, target: str, met: bool, **details) -> None:
    """Print the result line ``python -m bench`` collects (and a human one)."""
    cpu = f" (by CPU time {details['ratio_cpu']:.3f})" if "ratio_cpu" in details else ""
    print(f"{name}: {measured} = {ratio:.3f}{cpu}   target {target}   {'met' if met else 'MISSED'}", flush=True)
    line = {"name": name, "measured": measured, "ratio": round(ratio, 4), "target": target, "met": met, **details}
    print(RESULT_PREFIX + json.dumps(line), flush=True)


def machine() -> str:
    import platform

    cpu = "?"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} on {THREADS} thread(s), "
            f"Python {sys.version.split()[0]}, {platform.system()}, load average {load:.1f}")


def real_model(checkpoint: str | None = None, *overrides: str):
    """(config, store, world, model artifact, tokenizer) for the benchmarks on a real model: SmolLM2-135M-Instruct
    (model=smollm2_135m, imported once from its GGUF file into the project's store, ROOT/.store), or the plain
    checkpoint directory ``checkpoint`` (default: $BENCH_CHECKPOINT) standing in for it. The toy world, for its
    arithmetic rows, lives in the same store."""
    from forgetting.pipeline import base_stage, world_stage
    from forgetting.runtime import tokenizer_of
    from forgetting.store import Artifact, Store

    checkpoint = checkpoint or os.environ.get("BENCH_CHECKPOINT")
    c = compose("model=smollm2_135m", f"store_dir={ROOT / '.store'}", *overrides)
    store = Store(c.store_dir)
    world = world_stage(c, store)
    base = Artifact("import", "checkpoint", Path(checkpoint).resolve()) if checkpoint else base_stage(c, store, world)
    return c, store, world, base, tokenizer_of(c, base)


def matmul_peak(dtype: torch.dtype, m: int = 2048, k: int = 2048, n: int = 2048, reps: int = 5) -> float:
    """This machine's matmul throughput in FLOP/s on the benchmark's threads: the best of ``reps`` (m, k) x (k, n)
    products (the default square one is the peak; a model's own shapes reach less)."""
    a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
    torch.mm(a, b)  # warm-up (oneDNN picks its kernel)
    best = 0.0
    for _ in range(reps):
        t = time.perf_counter()
        torch.mm(a, b)
        best = max(best, 2 * m * k * n / (time.perf_counter() - t))
    return best


def memory_bandwidth(mib: int = 256, reps: int = 5) -> float:
    """Bytes/s moved by copying a ``mib`` MiB fp32 tensor (read + write), the best of ``reps``: the bound on any
    step that streams the weights once."""
    src = torch.randn(mib * 2 ** 18)
    dst = torch.empty_like(src)
    best = 0.0
    for _ in range(reps):
        t = time.perf_counter()
        dst.copy_(src)
        best = max(best, 2 * src.numel() * 4 / (time.perf_counter() - t))
    return best


def linear_params(model) -> int:
    """Weights that take part in a matmul per token (every nn.Linear, the LM head included even when tied to the
    embedding; the embedding lookup itself does no FLOPs)."""
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
