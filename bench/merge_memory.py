"""(e) Peak memory of the Wise-FT merge (forgetting/merge/wise_ft.py) and of the diff-vector recycling merge
(forgetting/merge/diff.py: target + (fine-tuned − base), three models read) vs the size of one model.

    python -m bench.merge_memory            # ~1 min, ~1 GB of temp files

Two sharded checkpoints of a random Llama of ~420 MB (fp32, ``save_pretrained(max_shard_size=SHARD)``): the
"base" and a perturbed "fine-tuned" copy. The merge runs in a child process, REPS times; the child reads its
resident memory after its imports (baseline) and its peak resident memory after the merge (VmHWM in
/proc/self/status, which counts the pages of the memory-mapped shards it touched). Reported: the
largest (peak - baseline) / size of one checkpoint's safetensors on disk. Target: <= 1.5.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

from bench.common import ROOT, machine, report, workdir

ARCH = dict(vocab_size=32000, hidden_size=768, intermediate_size=2048, num_hidden_layers=8, num_attention_heads=12,
            num_key_value_heads=12, tie_word_embeddings=False)
SHARD, REPS, ALPHA = "50MB", 2, 0.5

# VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss over fork + exec, so the child would report this
# (parent) process's peak, which held the model
CHILD = """
import json, sys
from pathlib import Path
import torch, safetensors.torch
from forgetting.merge.diff import add_diff
from forgetting.merge.wise_ft import wise_ft

def status_kb(key):
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(key + ":"))

base, ft, out, alpha, target = sys.argv[1:6]
baseline = status_kb("VmRSS")
Path(out).mkdir(parents=True, exist_ok=True)
if target == "-":
    wise_ft(Path(base), Path(ft), Path(out), float(alpha))
else:
    add_diff(Path(target), Path(base), Path(ft), Path(out), 1.0)
print(json.dumps({"baseline_kb": baseline, "peak_kb": status_kb("VmHWM")}))
"""


def size_on_disk(d: Path) -> int:
    return sum(p.stat().st_size for p in d.glob("*.safetensors"))


def main() -> None:
    measure(workdir("bench-merge-"))  # ~1.2 GB of checkpoints, removed at exit


def measure(tmp: Path) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    print(f"machine: {machine()}")
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**ARCH))
    model.save_pretrained(tmp / "base", max_shard_size=SHARD)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    model.save_pretrained(tmp / "ft", max_shard_size=SHARD)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    model.save_pretrained(tmp / "target", max_shard_size=SHARD)  # another version, for the recycling merge
    n_params = sum(p.numel() for p in model.parameters())
    del model
    size = size_on_disk(tmp / "ft")
    print(f"random Llama, {n_params / 1e6:.0f}M params: {size / 2**20:.0f} MiB in "
          f"{len(list((tmp / 'ft').glob('*.safetensors')))} shards of <= {SHARD}", flush=True)
    for name, target in (("Wise-FT", "-"), ("recycle", str(tmp / "target"))):
        extra = []
        for i in range(REPS):
            out = tmp / f"merged-{name}-{i}"
            proc = subprocess.run([sys.executable, "-c", CHILD, str(tmp / "base"), str(tmp / "ft"), str(out),
                                   str(ALPHA), target], capture_output=True, text=True, cwd=ROOT, check=True)
            m = json.loads(proc.stdout.strip().splitlines()[-1])
            extra.append((m["peak_kb"] - m["baseline_kb"]) * 1024)
            print(f"  {name} rep {i + 1}/{REPS}: child baseline {m['baseline_kb'] / 2**10:.0f} MiB, peak "
                  f"{m['peak_kb'] / 2**10:.0f} MiB: the merge added {extra[-1] / 2**20:.0f} MiB "
                  f"({extra[-1] / size:.2f}x one model)", flush=True)
        assert size_on_disk(out) == size
        ratio = max(extra) / size
        report("merge_memory" if name == "Wise-FT" else "recycle_memory",
               f"{name} peak RSS (over baseline) / one model's size", ratio, "<= 1.5", ratio <= 1.5,
               model_mib=round(size / 2**20), peak_extra_mib=round(max(extra) / 2**20), shards=SHARD)


if __name__ == "__main__":
    main()
