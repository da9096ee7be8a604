"""(i) The memory estimate of --plan (forgetting/estimate.py) against the measured peak of real stages on CPU: the
toy model and SmolLM2-135M, full fine-tuning and LoRA, and HF generation. Target: every estimate within
``forgetting.estimate.TOLERANCE`` of its measurement.

    python -m bench.plan_memory               # ~25 min on 2 busy cores, ~9 GB of RAM at its peak
    python -m bench.plan_memory toy           # only the cases whose name starts with "toy"

Each case runs the pipeline's own stage (``train_stage``, or the augmentation's generation) in a child process on
a store where the base model is already built. The child imports everything the stage imports, reads its resident
memory (the baseline), resets its peak (``/proc/self/clear_refs``), runs the stage, and reports its peak resident
memory (VmHWM). Measured = peak − baseline: what the stage adds, as the estimate counts it (the estimate of a
CPU stage has no CUDA allowance). docs/plan.md has the table this prints.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# (name, overrides, stage measured). Every row is longer than trainer.max_seq_len (LONG, written by long_rows), so
# every batch is as wide as the estimate assumes: the estimate is an upper bound at the configured sequence length,
# and measuring it on shorter rows would only show the padding it does not know. The toy model at its default size
# on the default world's vocabulary; SmolLM2 as +experiment=smollm2 trains it (trainer=smollm2: bf16 autocast,
# packing). DATA is replaced by the rows' file.
DATA = "dataset.path=DATA"
TOY = ("model.pretrain.steps=4", "model.pretrain.batch_size=4", "trainer.max_steps=3", "trainer.save_steps=1000",
       "trainer.batch_size=32", "trainer.max_seq_len=256", "model.arch.max_position_embeddings=256",
       "dataset=jsonl", DATA)
SMOL = ("model=smollm2_135m", "trainer=smollm2", "trainer.max_steps=3", "trainer.save_steps=1000", "dataset=jsonl",
        DATA, "eval=smollm2")
CASES = [
    ("toy full FT", (*TOY, "method=ft"), "train"),
    ("toy LoRA r16", (*TOY, "method=lora"), "train"),
    ("toy full FT, bf16 autocast, 2 accumulated", (*TOY, "method=ft", "trainer.bf16=true", "trainer.batch_size=32",
                                                   "trainer.grad_accum=2"), "train"),
    ("toy ℓ2, gradient checkpointing", (*TOY, "method=l2", "trainer.gradient_checkpointing=true"), "train"),
    ("toy SAM, 2 accumulated", (*TOY, "method=sam", "trainer.batch_size=16", "trainer.grad_accum=2"), "train"),
    ("SmolLM2 full FT", (*SMOL, "method=ft"), "train"),
    ("SmolLM2 full FT, batch 16 × 256", (*SMOL, "method=ft", "trainer.batch_size=16", "trainer.max_seq_len=256",
                                         "trainer.packing=false"), "train"),
    ("SmolLM2 LoRA r16", (*SMOL, "method=lora"), "train"),
    ("SmolLM2 LoRA r16, bf16 base", (*SMOL, "method=lora", "model.dtype=bfloat16"), "train"),
    ("SmolLM2 8-bit AdamW", (*SMOL, "method=ft", "method.optimizer=adamw8bit"), "train"),
    ("SmolLM2 HF generation (CFS)", (*SMOL, "method=cfs", "generator=hf", "generator.batch_size=32",
                                     "generator.chunk=32", "dataset.limit=32"), "generate"),
]

CHILD = r"""
import json, os, shutil, sys
sys.path.insert(0, sys.argv[1])
import torch
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
from hydra import compose, initialize_config_dir
from forgetting.compose import register, validate
register()
with initialize_config_dir(config_dir=sys.argv[1] + "/conf", version_base="1.3"):
    c = validate(compose(config_name="config", overrides=json.loads(sys.argv[3])))
from forgetting.pipeline import base_stage, inputs_of, train_stage, world_stage
from forgetting.store import Store
import transformers.trainer, peft, accelerate  # noqa: F401  (a run has them loaded before its stage)
from forgetting.train import fit  # noqa: F401

def status_kb(key):
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(key + ":"))

store = Store(c.store_dir)
world = world_stage(c, store) if c.needs_world() else None
base = base_stage(c, store, world)
for stage in ("train", "generate"):  # measured again, not reused
    shutil.rmtree(store.root / stage, ignore_errors=True)
inputs = inputs_of(c, store, base, world)
rows = inputs.downstream()
tokenizer = inputs.tokenizer()
baseline = status_kb("VmRSS")
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # VmHWM := VmRSS: the peak from here on
if sys.argv[2] == "train":
    train_stage(c, store, base, world)
else:
    from forgetting.data.mix import n_augment
    c.method.parts()["augment"].rows(inputs, n_augment(len(rows), c.method.ratio))
print("RESULT " + json.dumps({"baseline_kb": baseline, "peak_kb": status_kb("VmHWM")}))
"""


def long_rows(path: Path, n: int = 256, words: int = 400) -> Path:
    """``n`` rows in MetaMathQA's schema whose answers run to ``words`` words (several hundred tokens)."""
    import random

    vocab = ("the of and to in is was for on as with by at from that which number answer total each more than "
             "apples seven twelve forty sum product half twice three hundred Mia Tom buys sells left").split()
    rng = random.Random(0)
    with open(path, "w") as f:
        for i in range(n):
            text = " ".join(rng.choice(vocab) for _ in range(words))
            f.write(json.dumps({"query": f"Question {i}: how many?", "response": f"{text} The answer is: {i}"}) + "\n")
    return path


# glibc's malloc serves allocations below a threshold it raises as it goes (up to 32 MiB) from its heap, which it
# rarely gives back: resident memory then stays above what is live. With the threshold fixed at 64 KiB every tensor
# is its own mapping, returned when freed, and the peak resident memory is the peak of live memory, what the
# estimate counts (and what a GPU's torch.cuda.max_memory_allocated counts)
LIVE = {"MALLOC_MMAP_THRESHOLD_": "65536"}


def measure(overrides: list[str], what: str = "train", live: bool = True) -> int:
    """Bytes the stage ``what`` (train | generate) of the config ``overrides`` adds to its process at its peak: of
    live memory (``live``), or of resident memory under glibc's default allocator."""
    env = {**os.environ, **(LIVE if live else {})}
    proc = subprocess.run([sys.executable, "-c", CHILD, str(ROOT), what, json.dumps(list(overrides))],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=1800)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"measuring {overrides}: exit {proc.returncode}\n{proc.stderr[-3000:]}")
    r = json.loads(line[len("RESULT "):])
    return (r["peak_kb"] - r["baseline_kb"]) * 1024


def estimate(overrides: list[str], what: str = "train"):
    """The plan's estimate (forgetting.estimate.Estimate) of that stage on this machine (CPU)."""
    from hydra import compose, initialize_config_dir

    from forgetting.compose import register, validate
    from forgetting.estimate import host_device
    from forgetting.plan import stages

    register()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        c = validate(compose(config_name="config", overrides=list(overrides)))
    step = next(s for s in stages(c, host_device()) if s.stage == what and s.estimate is not None)
    return step.estimate


def prepare(store_dir: Path, overrides: list[str]) -> None:
    """Build the world and base (or the GGUF import) the cases start from, once."""
    subprocess.run([sys.executable, "-c", CHILD.split("inputs = inputs_of")[0], str(ROOT), "none",
                    json.dumps([*overrides, f"store_dir={store_dir}"])], check=True, cwd=ROOT, capture_output=True)


def main(prefixes: list[str]) -> None:
    from bench.common import machine, report, workdir
    from forgetting.estimate import TOLERANCE, human

    print(f"machine: {machine()}")
    store = workdir("bench-plan-")
    data = long_rows(workdir("bench-plan-rows-") / "long.jsonl")
    rows, worst = [], 0.0
    prepared = set()
    for name, overrides, what in CASES:
        if prefixes and not any(name.lower().startswith(p.lower()) for p in prefixes):
            continue
        overrides = [o.replace("DATA", str(data)) for o in overrides] + [f"store_dir={store}"]
        family = overrides[0].split("=")[0] if overrides[0].startswith("model=") else "toy"
        if family not in prepared:
            prepare(store, list(overrides))
            prepared.add(family)
        est = estimate(overrides, what)
        got = measure(overrides, what)
        rss = measure(overrides, what, live=False)
        err = est.peak / got - 1
        worst = max(worst, abs(err))
        rows.append((name, what, est.peak, got, err, rss))
        print(f"{name:<45} estimate {human(est.peak):>10}  measured {human(got):>10}  {err:+.0%}   (resident "
              f"under glibc's default malloc {human(rss)}: {est.peak / rss - 1:+.0%})", flush=True)
        print("    " + " + ".join(f"{k} {human(v)}" for k, v in est.parts.items()), flush=True)
    print("\n| case | stage | estimate | measured (live) | error | resident, default malloc | error |\n"
          "|---|---|---|---|---|---|---|")
    for name, what, e, m, err, rss in rows:
        print(f"| {name} | {what} | {human(e)} | {human(m)} | {err:+.0%} | {human(rss)} | {e / rss - 1:+.0%} |")
    report("plan_memory", "largest |estimate / measured − 1|", worst, f"<= {TOLERANCE:.2f}", worst <= TOLERANCE)


if __name__ == "__main__":
    main(sys.argv[1:])
