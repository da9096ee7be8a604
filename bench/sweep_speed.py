"""(h) The real-model sweep, before and after: ``+experiment=smollm2`` (Base, FT, CFS on SmolLM2-135M) as of the
commit the cost was measured on (``BEFORE``) and as of this checkout, job by job, alternating.

    python -m bench.sweep_speed             # the preset at a quarter of its size (~15 min on 2 cores)
    python -m bench.sweep_speed --full      # the preset as it is (~50 min): docs/performance.md's numbers

Both sides run ``python launch.py +experiment=smollm2 method=<m>`` as a user would (all cores, each tree's own
preset and code, each in a fresh store of its own, so both import the GGUF and generate their own samples), in the
order before-Base, now-Base, before-FT, now-FT, before-CFS, now-CFS; the wall time of each command is the cost. The
BEFORE tree is ``git archive BEFORE`` of this repository (skipped, with a reason, where the history lacks it).
What changed between them (docs/performance.md): generation by vLLM's CPU build where installed
(``generator=auto``), packed training batches (``trainer=smollm2``), the KL's base losses scored once per base, the
evaluation's rows batched by length. The small size (``dataset.limit=160``: 20 steps, 160 CFS samples;
``eval.limit=25``, ``eval.corpus_docs=16``, ``eval.base_samples=16``) applies to both sides.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

from bench.common import ROOT, machine, report, workdir

BEFORE = "9ea63bf"  # the commit whose `+experiment=smollm2` sweep took 28 min 26 s here (issue 23)
SMALL = ["dataset.limit=160", "eval.limit=25", "eval.corpus_docs=16", "eval.base_samples=16"]
METHODS = ["base", "ft", "cfs"]


def checkout(commit: str, into: Path) -> Path | None:
    """The tree of ``commit`` (git archive), or None when this repository's history does not hold it."""
    archive = into / "tree.tar"
    with open(archive, "wb") as f:
        proc = subprocess.run(["git", "-C", str(ROOT), "archive", commit], stdout=f, stderr=subprocess.PIPE)
    if proc.returncode != 0:
        print(f"cannot check out {commit}: {proc.stderr.decode().strip()}")
        return None
    tree = into / commit
    with tarfile.open(archive) as tar:
        tar.extractall(tree, filter="data")
    return tree


def run(tree: Path, store: Path, method: str, extra: list[str]) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS",)}  # all cores, as a user runs it
    cmd = [sys.executable, "launch.py", "+experiment=smollm2", f"method={method}", "hydra.mode=RUN",
           f"store_dir={store}", f"hydra.run.dir={store.parent / ('run-' + method)}", *extra]
    started = time.time()
    proc = subprocess.run(cmd, cwd=tree, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seconds = time.time() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed in {tree}:\n{proc.stdout[-3000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--full", action="store_true", help="the preset at its own size (~50 min)")
    args = parser.parse_args()
    extra = [] if args.full else SMALL
    scratch = workdir("bench-sweep-")
    before = checkout(BEFORE, scratch)
    print(machine())
    print(f"+experiment=smollm2 {' '.join(extra) or '(full size)'}: {BEFORE} vs this checkout, job by job")
    if before is None:
        report("sweep_speed", f"skipped: {BEFORE} is not in this clone's history", 0.0, "≥ 2×", False)
        return
    totals = {"before": 0.0, "now": 0.0}
    for method in METHODS:
        for side, tree in (("before", before), ("now", ROOT)):
            seconds = run(tree, scratch / side / "store", method, extra)
            totals[side] += seconds
            print(f"  {method:<5} {side:<7} {seconds:7.1f} s", flush=True)
    ratio = totals["before"] / totals["now"]
    print(f"sweep: before {totals['before']:.0f} s, now {totals['now']:.0f} s: {ratio:.2f}x faster")
    report("sweep_speed", f"{totals['before']:.0f} s → {totals['now']:.0f} s "
           f"({'full' if args.full else 'quarter'} size)", ratio, "≥ 2× (issue 23)", ratio >= 2.0)


if __name__ == "__main__":
    main()
