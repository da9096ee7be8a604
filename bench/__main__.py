"""Run the nine benchmarks, one process each, and print a summary table.

    make bench                  # = python -m bench
    python -m bench packing     # only some of them

Each benchmark prints its own measurements; its last line is a result this runner collects. Their stderr (library
warnings, progress bars) is kept out of the way and shown only when a benchmark fails.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time

from bench.common import RESULT_PREFIX

BENCHMARKS = ["train_speed", "packing", "generate_speed", "ratio_grid", "merge_memory", "vllm_speed", "train_mfu",
              "sweep_speed", "stream_memory"]


def main(names: list[str]) -> int:
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown:
        print(f"unknown benchmark {unknown[0]!r}: expected some of {', '.join(BENCHMARKS)}", file=sys.stderr)
        return 2
    rows, failed = [], []
    for name in names or BENCHMARKS:
        print(f"\n=== {name} ===", flush=True)
        started = time.time()
        with tempfile.TemporaryFile("w+") as err:
            proc = subprocess.Popen([sys.executable, "-m", f"bench.{name}"], stdout=subprocess.PIPE, stderr=err,
                                    text=True, bufsize=1)
            result = None
            for line in proc.stdout:
                if line.startswith(RESULT_PREFIX):
                    result = json.loads(line[len(RESULT_PREFIX):])
                else:
                    print(line, end="", flush=True)
            if proc.wait() != 0 or result is None:
                err.seek(0)
                print("".join(err.readlines()[-30:]), file=sys.stderr)
                failed.append(name)
                continue
        rows.append((result, time.time() - started))
    if rows:
        print("\n| benchmark | measured | ratio | target | met | time |\n|---|---|---|---|---|---|")
        for r, seconds in rows:
            cpu = f" (CPU time: {r['ratio_cpu']:.3f})" if "ratio_cpu" in r else ""
            print(f"| {r['name']} | {r['measured']} | {r['ratio']:.3f}{cpu} | {r['target']} | "
                  f"{'yes' if r['met'] else 'NO'} | {seconds:.0f} s |")
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
