"""Kill anywhere, lose nothing: a run SIGKILLed inside any stage reruns to exactly the uninterrupted run's result.

    pytest tests/test_kill.py

One run that has every stage (CFS samples, training, a Wise-FT merge, evaluation) is killed inside each of them in
turn (tests/kill_at.py); each rerun picks up what the previous one left, and the last one finishes.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys

from conftest import ROOT, compose

from forgetting.pipeline import run
from forgetting.store import Artifact, Store

ARGS = ["debug=micro", "method=cfs", "method.merge=wise_ft", "method.alpha=0.5"]  # generate, train, merge, evaluate


def _launch(store, run_dir, kill_at=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # this checkout's package, for tests/kill_at.py too
    script = ROOT / "launch.py"
    if kill_at:
        env["KILL_AT"], script = kill_at, ROOT / "tests" / "kill_at.py"
    return subprocess.run([sys.executable, str(script), *ARGS, f"store_dir={store}", f"hydra.run.dir={run_dir}"],
                          env=env, capture_output=True, text=True, timeout=600)


def _landed(store, stage) -> list[str]:
    return sorted(p.name for p in (store / stage).glob("[!.]*")) if (store / stage).exists() else []


def _checksums(store, stage) -> dict:
    """sha256 of the stage's samples and weights (its logs record wall times, paths and where it resumed)."""
    out = {}
    for key in _landed(store, stage):
        files = Artifact(stage, key, Store(store).path(stage, key)).manifest["files"]
        out.update({(key, name): meta["sha256"] for name, meta in files.items()
                    if name.endswith((".safetensors", "samples.jsonl"))})
    return out


def test_a_run_killed_inside_each_stage_reruns_to_the_uninterrupted_metrics(micro_store, store_copy, tmp_path):
    reference = run(compose(*ARGS, f"store_dir={store_copy}"), tmp_path / "reference")
    store = tmp_path / "killed"
    shutil.copytree(micro_store, store)
    (store / "log.jsonl").unlink(missing_ok=True)
    run_dir = tmp_path / "run"

    def killed(at: str) -> None:
        proc = _launch(store, run_dir, at)
        assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]

    killed("generate:2")  # sampling the second chunk of context-free samples
    assert len(_landed(store, "generate")) == 1 and list((store / "generate").glob(".tmp-*"))
    assert not (store / "train").exists()
    killed("train:checkpoint")  # mid-training (step 3 of 6), its first checkpoint just saved
    assert len(_landed(store, "generate")) == 4  # 64 samples in chunks of 16 (debug=micro)
    assert list((store / "train").glob(".work-*/checkpoint-3")) and not _landed(store, "train")
    killed("merge")
    (train,) = _landed(store, "train")
    assert "checkpoint-3" in json.loads((store / "train" / train / "train_summary.json").read_text())["resumed_from"]
    assert not _landed(store, "merge")
    killed("evaluate")
    assert _landed(store, "merge") and not _landed(store, "evaluate")
    assert not (run_dir / "results.json").exists()

    n = len(Store(store).log())
    proc = _launch(store, run_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rerun = {e["stage"]: e["hit"] for e in Store(store).log()[n:]}
    assert rerun == {"world": True, "pretrain": True, "generate": True, "train": True, "merge": True,
                     "evaluate": False}  # only the stage killed last ran again
    result = json.loads((run_dir / "results.json").read_text())
    assert result["metrics"] == reference["metrics"]
    assert result["artifacts"]["model"] == reference["artifacts"]["model"]
    for stage in ("generate", "train", "merge"):  # samples and weights (the resumed training's too), bit for bit
        assert _checksums(store, stage) == _checksums(store_copy, stage)
    assert not [p for p in store.glob("*/.*")], "leftovers of the killed builds remain"


def test_a_kill_while_a_checkpoint_is_written_never_wedges_the_run(micro_store, store_copy, tmp_path):
    """Killed while checkpoint 2 is half written (HF writes its trainer_state.json last): the rerun resumes from
    checkpoint 1, the last whole one, instead of failing on the half-written one, and ends where an uninterrupted
    run ends."""
    args = ["debug=micro", "method=ft", "trainer.save_steps=2"]  # checkpoints at steps 2, 4 of 6
    reference = run(compose(*args, f"store_dir={store_copy}"), tmp_path / "reference")
    store = tmp_path / "killed"
    shutil.copytree(micro_store, store)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "KILL_AT": "train:mid-checkpoint"}
    cmd = [sys.executable, str(ROOT / "tests" / "kill_at.py"), *args, f"store_dir={store}",
           f"hydra.run.dir={tmp_path / 'run'}"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    (work,) = (store / "train").glob(".work-*")
    assert (work / "checkpoint-4").is_dir() and not (work / "checkpoint-4" / "trainer_state.json").exists()
    proc = _launch_with(args, store, tmp_path / "run")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "run" / "results.json").read_text())
    (train,) = _landed(store, "train")
    assert json.loads((store / "train" / train / "train_summary.json").read_text())["resumed_from"].endswith(
        "checkpoint-2")
    assert result["metrics"] == reference["metrics"]
    assert _checksums(store, "train") == _checksums(store_copy, "train")


def _launch_with(args, store, run_dir) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, str(ROOT / "launch.py"), *args, f"store_dir={store}",
                           f"hydra.run.dir={run_dir}"], env=env, capture_output=True, text=True, timeout=600)
