"""(d) What a 4-point ratio grid costs next to a single run: generation must be paid once.

    python -m bench.ratio_grid            # ~1 min on 2 cores

On the micro toy world (debug=micro, with 100-token samples; its base model pretrained once, then copied), in
fresh copies of the store:
- single: the generate + train stages of ``method=cfs method.ratio=2.0``;
- grid: the same for ``method.ratio=0.1,0.5,1.0,2.0``, in that order (smallest first, the hard case for reuse),
as ``launch.py -m`` would run them one after another on one store. Measured from the store itself: the
generate-stage misses in its log (chunks sampled) and the seconds its generate artifacts took to build (their
manifests), and the wall time of the whole run. Single and grid alternate REPS times; reported: the median of
grid / single generation time (target ~1.0), the misses, and the total cost ratio.
"""
from __future__ import annotations

import contextlib
import io
import json
import shutil
import statistics
import time
from pathlib import Path

from bench.common import compose, machine, report, workdir

GRID, REPS = (0.1, 0.5, 1.0, 2.0), 3
# longer samples than debug=micro's 24 tokens, so that sampling, not loading the micro model, is what is timed
OVERRIDES = ("debug=micro", "generator.max_new_tokens=100")


def run(root: Path, ratios) -> dict:
    from forgetting.pipeline import base_stage, train_stage, world_stage
    from forgetting.store import Store

    t = time.perf_counter()
    for r in ratios:
        c = compose(*OVERRIDES, f"store_dir={root}", "method=cfs", f"method.ratio={r}")
        store = Store(root)
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):  # log lines
            world = world_stage(c, store)
            train_stage(c, store, base_stage(c, store, world), world)
    wall = time.perf_counter() - t
    gen = [e for e in Store(root).log() if e["stage"] == "generate"]
    misses = [e["key"] for e in gen if not e["hit"]]
    seconds = sum(json.loads((root / "generate" / k / "manifest.json").read_text())["seconds"] for k in misses)
    return {"wall": wall, "gen_s": seconds, "misses": misses, "hits": len(gen) - len(misses)}


def main() -> None:
    from forgetting.pipeline import base_stage, world_stage
    from forgetting.store import Store

    tmp = workdir("bench-grid-")
    base = tmp / "base"
    c = compose(*OVERRIDES, f"store_dir={base}")
    store = Store(base)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        base_stage(c, store, world_stage(c, store))  # the micro world and its pretrained model, shared by every run
    print(f"machine: {machine()}")
    print(f"micro world: {c.world.n_down_train} downstream rows, generator chunk {c.generator.chunk}, "
          f"{c.generator.max_new_tokens} new tokens, trainer.max_steps {c.trainer.max_steps}", flush=True)
    results = {"single": [], "grid": []}
    for i in range(REPS):
        for name, ratios in (("single", (max(GRID),)), ("grid", GRID)):
            root = tmp / f"{name}{i}"
            shutil.copytree(base, root)
            (root / "log.jsonl").unlink(missing_ok=True)
            results[name].append(run(root, ratios))
            r = results[name][-1]
            print(f"  rep {i + 1}/{REPS} {name:6s} ratios {ratios}: {len(r['misses'])} chunks sampled, "
                  f"{r['hits']} read back; generation {r['gen_s']:.2f} s; whole run {r['wall']:.1f} s", flush=True)
    gen_ratio = statistics.median(g["gen_s"] / s["gen_s"] for g, s in zip(results["grid"], results["single"]))
    cost_ratio = statistics.median(g["wall"] / s["wall"] for g, s in zip(results["grid"], results["single"]))
    misses_single = len(results["single"][0]["misses"])
    misses_grid = len(results["grid"][0]["misses"])
    same_chunks = all(set(g["misses"]) == set(s["misses"]) for g, s in zip(results["grid"], results["single"]))
    print(f"generate-stage misses: grid {misses_grid}, single {misses_single}; the grid sampled "
          f"{'exactly the chunks the single run samples' if same_chunks else 'OTHER chunks than the single run'}")
    print(f"total cost: the grid (4 trainings) takes {cost_ratio:.2f}x the single run")
    report("ratio_grid", f"grid / single generation time ({misses_grid} vs {misses_single} chunks sampled)", gen_ratio,
           "~1.0: generation paid once", same_chunks and misses_grid == misses_single, misses_grid=misses_grid,
           misses_single=misses_single, total_cost_ratio=round(cost_ratio, 3))


if __name__ == "__main__":
    main()
