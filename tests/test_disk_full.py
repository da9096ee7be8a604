"""A full disk never wedges a run: the store on a small filesystem that fills while the train stage writes its first
checkpoint; the run stops with one line naming the store and the stage, leaves nothing that looks complete, and the
rerun after space is freed ends with the metrics of an uninterrupted run.

    pytest tests/test_disk_full.py        # needs root (it mounts a size-limited tmpfs); skipped otherwise
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from conftest import ROOT, compose

from forgetting.pipeline import run


@pytest.fixture
def small_disk(tmp_path):
    """A 64 MiB tmpfs, unmounted afterwards."""
    disk = tmp_path / "disk"
    disk.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(disk)], capture_output=True,
                          text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a size-limited tmpfs here (needs root): {proc.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def _launch(args, store, run_dir) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, str(ROOT / "launch.py"), *args, f"store_dir={store}",
                           f"hydra.run.dir={run_dir}"], env=env, capture_output=True, text=True, timeout=600)


def test_a_full_disk_stops_in_one_line_and_the_rerun_finishes_as_if_nothing_happened(micro_store, store_copy,
                                                                                     tmp_path, small_disk):
    args = ["debug=micro", "method=ft"]  # checkpoints at steps 3 and 6
    reference = run(compose(*args, f"store_dir={store_copy}"), tmp_path / "reference")
    store = small_disk / "store"
    shutil.copytree(micro_store, store)
    weights = next((micro_store / "pretrain").glob("[!.]*/model.safetensors")).stat().st_size
    # room for the fine-tuned weights, not for the optimizer state (twice as large) of the first checkpoint
    filler = small_disk / "filler"
    with open(filler, "wb") as f:
        f.write(b"\0" * (shutil.disk_usage(small_disk).free - int(1.5 * weights)))
    proc = _launch(args, store, tmp_path / "run")
    assert proc.returncode == 2, proc.stderr[-3000:]
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("error:")]  # one line (then tqdm's bar closes)
    assert line.startswith(f"error: store_dir={store}: no space left on the device while building train"), line
    assert "Traceback" not in proc.stderr
    assert not [p for p in (store / "train").glob("[!.]*")]  # nothing that looks complete
    assert not list((store / "train").glob(".tmp-*"))
    assert not (tmp_path / "run" / "results.json").exists()

    filler.unlink()
    proc = _launch(args, store, tmp_path / "run")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "run" / "results.json").read_text())
    assert result["metrics"] == reference["metrics"]
    assert result["artifacts"]["model"] == reference["artifacts"]["model"]
