"""(i) Mid-training memory vs corpus size: a ``model.midtrain`` segment on a corpus 1× and 20× as large, streamed and
packed (``model.midtrain.packing=true``, forgetting/data/stream.py) and read whole (``packing=false``, one document per
row, as before streaming existed): the peak resident memory of the training process above its baseline.

    python -m bench.stream_memory              # ~3 min on 2 cores
    python -m bench.stream_memory --docs 50000 # the small corpus's documents (the large one has 20×)

Each run is a child process (the micro toy model, 10 steps of 8 × 64 tokens, one process) that reads its resident
memory after its imports and model load, trains, and reports ``VmHWM`` (getrusage would report this process's peak
after fork). The corpora are world-style documents written to jsonl. Target: streaming's peak does not grow with the
corpus (ratio large/small ≤ 1.1); reading whole, it does.
"""
from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
from pathlib import Path

from bench.common import ROOT, machine, report, toy_world, workdir

CHILD = r"""
import json, sys
sys.path.insert(0, {root!r})
import torch
torch.set_num_threads(1)
from transformers import LlamaConfig, LlamaForCausalLM
from forgetting.config import TrainerConfig
from forgetting.data.encode import encode_text
from forgetting.data.stream import PackedCorpus, documents
from forgetting.models import load_tokenizer
from forgetting.train.trainer import train

def status_kb(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1])

tok = load_tokenizer({tokenizer!r})
model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                     num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128))
baseline = status_kb("VmRSS")
if {packing!r}:
    rows = PackedCorpus({tokenizer!r}, 64, path={corpus!r})
else:  # the corpus read whole, one row per document (the code before streaming)
    rows = [encode_text(tok, t, 64) for t in documents({corpus!r})]
t = TrainerConfig(lr=1e-3, batch_size=8, warmup_ratio=0.0, save_steps=1000, logging_steps=5)
train(model, tok, rows, {out!r}, {work!r}, t, steps=10)
print(json.dumps({{"baseline_kb": baseline, "peak_kb": status_kb("VmHWM")}}))
"""


def write_corpus(path: Path, world_dir: Path, n: int) -> None:
    docs = [json.loads(line)["text"] for line in open(world_dir / "corpus.jsonl")]
    rng = random.Random(0)
    with open(path, "w") as f:
        for _ in range(n):
            f.write(json.dumps({"text": rng.choice(docs)}) + "\n")


def peak_mb(tmp: Path, tokenizer: str, corpus: Path, packing: bool, tag: str) -> float:
    code = CHILD.format(root=str(ROOT), tokenizer=tokenizer, corpus=str(corpus), packing=packing,
                        out=str(tmp / f"out-{tag}"), work=str(tmp / f"work-{tag}"))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    return (got["peak_kb"] - got["baseline_kb"]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", type=int, default=20_000, help="documents of the small corpus (the large: 20×)")
    args = parser.parse_args()
    tmp = workdir("bench-stream-")
    _, _, world, _ = toy_world(tmp / "store", "debug=micro")
    tokenizer = str(world.path / "tokenizer")
    small, large = tmp / "small.jsonl", tmp / "large.jsonl"
    write_corpus(small, world.path, args.docs)
    write_corpus(large, world.path, 20 * args.docs)
    print(machine())
    print(f"corpora: {args.docs:,} and {20 * args.docs:,} documents ({small.stat().st_size / 2**20:.1f} and "
          f"{large.stat().st_size / 2**20:.1f} MiB); peak resident memory above the process's baseline:")
    peaks = {}
    for packing in (True, False):
        for name, corpus in (("small", small), ("large", large)):
            peaks[packing, name] = peak_mb(tmp, tokenizer, corpus, packing, f"{packing}-{name}")
            print(f"  {'streamed, packed' if packing else 'read whole':<17} {name:<5} {peaks[packing, name]:8.1f} MiB",
                  flush=True)
    ratio = peaks[True, "large"] / peaks[True, "small"]
    whole = peaks[False, "large"] / peaks[False, "small"]
    report("stream_memory", f"streamed: {peaks[True, 'small']:.0f} → {peaks[True, 'large']:.0f} MiB for 20× the "
           f"corpus (read whole: {peaks[False, 'small']:.0f} → {peaks[False, 'large']:.0f} MiB, {whole:.2f}×)",
           ratio, "≤ 1.1×", ratio <= 1.1, whole=round(whole, 3))


if __name__ == "__main__":
    main()
