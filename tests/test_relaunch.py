"""Sweeps on a cluster: `hydra/launcher=slurm` runs a sweep as a job array on a real SLURM cluster (one node, this
machine: tests/slurm_cluster.py) with the local launcher's results, a task past its time limit is requeued and
resumes from its checkpoint, and a relaunched sweep (a requeued or resubmitted one) finishes only what is missing.

    pytest tests/test_relaunch.py

The SLURM tests need root and Debian's slurmctld, slurmd, munge and slurm-client (`make test` installs them on
Linux when it runs as root); without them they are skipped, with the reason.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CONF, ROOT, compose
from slurm_cluster import Cluster, ClusterError, unavailable

from forgetting.store import Store

SWEEP_TIMEOUT = 500  # s: a hung sweep (a task that died without a result) fails its test, under pytest-timeout's 600


@pytest.fixture(scope="session")
def slurm():
    """A one-node SLURM cluster (2 CPUs, one partition) started for the session and stopped after it; skipped
    where it cannot run."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="needs the slurm extra (in .[dev])")
    reason = unavailable()
    if reason:
        pytest.skip(reason)
    try:
        cluster = Cluster.start()
    except (ClusterError, OSError, subprocess.SubprocessError) as err:
        pytest.skip(f"a local SLURM cluster did not start here: {err}")
    yield cluster
    cluster.stop()


def _hydra_config(*overrides: str):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from forgetting.compose import register

    register()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=list(overrides), return_hydra_config=True)


def test_slurm_launcher_defaults_size_one_task_for_the_8b_run():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="needs the slurm extra (in .[dev])")
    defaults = _hydra_config("hydra/launcher=slurm").hydra.launcher
    assert defaults._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert (defaults.gpus_per_node, defaults.tasks_per_node, defaults.nodes) == (8, 1, 1)  # one 8B point per node
    assert defaults.max_num_timeout > 0 and defaults.signal_delay_s > 0  # timed-out tasks are requeued
    assert compose("hydra/launcher=slurm", "debug=micro").world.name == "micro"  # the job config is unchanged


def test_a_time_limit_the_warning_signal_fills_is_refused_before_anything_is_submitted(tmp_path):
    """With the default signal_delay_s (300 s), a 1 min limit would be signalled at every attempt's start: refused
    in one line, before sbatch is called (no cluster needed) and before the sweep directory is made."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="needs the slurm extra (in .[dev])")
    proc = _sweep("hydra/launcher=slurm", "hydra.launcher.timeout_min=1", "debug=micro",
                  f"store_dir={tmp_path / 'store'}", f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: hydra.launcher.signal_delay_s=300 is invalid with hydra.launcher.timeout_min=1: "
                           "expected less than 30 s"), line
    assert not (tmp_path / "sweep").exists()


def _store(micro_store: Path, dst: Path) -> Path:
    shutil.copytree(micro_store, dst)
    (dst / "log.jsonl").unlink(missing_ok=True)
    return dst


def _sweep(*args: str, cluster: Cluster | None = None, **launcher) -> subprocess.CompletedProcess:
    """``launch.py -m *args``, on the cluster's partition when given (with ``hydra.launcher.<k>=<v>`` overrides)."""
    env = dict(cluster.env if cluster else os.environ)
    # the tasks run this checkout's package (and tests/slurm_cluster.py's callback), whatever is installed
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "tests"), env.get("PYTHONPATH", "")])
    if cluster:
        # a small task (the defaults size one for an 8B model): 1 of the node's 2 CPUs, so two run at once
        launcher = {"partition": cluster.partition, "gpus_per_node": 0, "cpus_per_task": 1, "mem_gb": 1, **launcher}
        args = ("hydra/launcher=slurm", *(f"hydra.launcher.{k}={v}" for k, v in launcher.items()), *args)
    return subprocess.run([sys.executable, str(ROOT / "launch.py"), "-m", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=SWEEP_TIMEOUT)


def _metrics(sweep: Path, n: int) -> list[dict]:
    return [json.loads((sweep / str(i) / "results.json").read_text())["metrics"] for i in range(n)]


def _built(store: Path) -> list[tuple[str, str]]:
    return sorted((e["stage"], e["key"]) for e in Store(store).log() if not e["hit"])


def test_a_sweep_on_slurm_is_a_job_array_with_the_local_launchers_results(slurm, micro_store, tmp_path):
    """Two points as two tasks of one job array, each computing its samples, training and evaluation in its own
    store (a copy of the micro store: world and base model), against the same sweep on the local launcher in
    another copy: the same artifacts (keys) are built and the results carry the same metrics, so a SLURM task
    computes what a local run does, not merely reads it back."""
    args = ("method=ft,cfs", "debug=micro")
    stores = {name: _store(micro_store, tmp_path / name / "store") for name in ("slurm", "local")}
    sweeps = {name: tmp_path / name / "sweep" for name in stores}
    on_slurm = _sweep(*args, f"store_dir={stores['slurm']}", f"hydra.sweep.dir={sweeps['slurm']}", cluster=slurm)
    assert on_slurm.returncode == 0, on_slurm.stderr[-3000:]
    local = _sweep(*args, f"store_dir={stores['local']}", f"hydra.sweep.dir={sweeps['local']}")
    assert local.returncode == 0, local.stderr[-3000:]

    assert _metrics(sweeps["slurm"], 2) == _metrics(sweeps["local"], 2)
    built = _built(stores["slurm"])
    assert built == _built(stores["local"])
    assert {s for s, _ in built} == {"generate", "train", "evaluate"}  # computed in the tasks, not cache hits
    for name in stores:
        report = (sweeps[name] / "report.md").read_text()
        assert "| FT |" in report and "| CFS |" in report

    # one sbatch job array, its two tasks run by the cluster, with the launcher's settings
    (script,) = (sweeps["slurm"] / ".submitit").glob("*/*_submission.sh")
    job = script.parent.name
    sbatch = script.read_text().splitlines()
    for line in (f"#SBATCH --partition={slurm.partition}", "#SBATCH --cpus-per-task=1", "#SBATCH --mem=1GB",
                 "#SBATCH --gpus-per-node=0", "#SBATCH --time=1440", "#SBATCH --array=0-1%2"):
        assert line in sbatch
    for task in (0, 1):
        log = (sweeps["slurm"] / ".submitit" / f"{job}_{task}" / f"{job}_{task}_0_log.out").read_text()
        assert f"job_id={job}_{task}" in log and "Job completed successfully" in log
        shown = slurm.run("scontrol", "show", "job", f"{job}_{task}")
        assert "JobState=COMPLETED" in shown and f"NodeList={slurm.node}" in shown


def test_a_task_past_its_time_limit_is_requeued_and_resumes_to_the_uninterrupted_metrics(slurm, micro_store,
                                                                                           tmp_path):
    """A real time limit (``timeout_min=2``): SLURM signals the task (USR2, ``signal_delay_s`` before the limit),
    submitit requeues it (``scontrol requeue``) and the next attempt resumes training from its last checkpoint.
    The first attempt that reaches a checkpoint holds training there (tests/slurm_cluster.py's
    ``HoldAfterFirstCheckpoint``) so that the limit strikes mid-training however fast this machine trains; the
    requeued attempt trains on and finishes with the metrics of an uninterrupted run (in this process, another
    store)."""
    from forgetting.pipeline import run

    args = ("method=ft", "debug=micro")  # 6 steps, a checkpoint every 3
    reference = run(compose(*args, f"store_dir={_store(micro_store, tmp_path / 'reference')}"), tmp_path / "ref")
    store, sweep = _store(micro_store, tmp_path / "store"), tmp_path / "sweep"
    proc = _sweep(*args, f"store_dir={store}", f"hydra.sweep.dir={sweep}",
                  "+hydra.callbacks.hold._target_=slurm_cluster.HoldAfterFirstCheckpoint", cluster=slurm,
                  # SLURM checks time limits every 30 s and signals up to that much earlier than asked: 1 s before
                  # a 2 min limit is 89 to 119 s into an attempt, time for the resumed one to start (up to 35 s on
                  # a loaded 2-core machine) and finish; with 1 min, 29 to 59 s, it may not (docs/slurm.md)
                  timeout_min=2, signal_delay_s=1, max_num_timeout=3)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _metrics(sweep, 1) == [reference["metrics"]]

    (script,) = (sweep / ".submitit").glob("*/*_submission.sh")
    job = script.parent.name
    sbatch = script.read_text().splitlines()
    assert "#SBATCH --time=2" in sbatch and "#SBATCH --signal=USR2@1" in sbatch
    log = (script.parent / f"{job}_0_log.out").read_text()
    attempts = log.split("Starting with JobEnvironment")[1:]  # every attempt appends to the task's log
    held = next(i for i, a in enumerate(attempts) if "hold: checkpoint-3 saved" in a)
    assert len(attempts) == held + 2, log[-3000:]  # (on a slow machine, attempts may time out before the hold)
    assert all("this job is timed-out" in a and "Requeued job" in a for a in attempts[:-1])
    resumed = attempts[-1]
    assert "train: resuming from checkpoint-3 (of 6 steps)" in resumed and "Job completed successfully" in resumed
    assert re.search(rf"Requeuing JobId={job}\b", slurm.log("slurmctld"))
    assert f"Restarts={len(attempts) - 1}" in slurm.run("scontrol", "show", "job", job)


def _stages(entries: list[dict], hit: bool) -> list[tuple[str, str]]:
    return [(e["stage"], e["key"]) for e in entries if e["hit"] == hit]


def test_relaunched_sweep_recomputes_nothing_finished_and_only_the_missing_work(store_copy, tmp_path):
    """A sweep whose training jobs fail mid-way (after CFS generated its samples) is relaunched unchanged: the
    finished point is all cache hits, CFS's samples are read back, and only the two trainings and their
    evaluations run."""
    sweep = tmp_path / "sweep"
    args = [sys.executable, str(ROOT / "launch.py"), "-m", "method=base,ft,cfs", "debug=micro",
            f"store_dir={store_copy}", f"hydra.sweep.dir={sweep}"]
    # a deterministic fault the relaunch does not have: a file where the store's train/ directory goes, so every
    # training fails to create its artifact (as on a full or unwritable disk) while other stages complete
    (store_copy / "train").write_text("")
    first = subprocess.run(args, cwd=ROOT, capture_output=True, text=True)
    assert first.returncode != 0
    log1 = Store(store_copy).log()
    assert [p.parent.name for p in sorted(sweep.glob("*/results.json"))] == ["0"]  # only Base finished
    assert [s for s, _ in _stages(log1, hit=False)] == ["evaluate", "train", *["generate"] * 4, "train"]
    assert {s for s, _ in _stages(log1, hit=True)} == {"world", "pretrain"}  # the store's micro world and model
    failed_trainings = {k for s, k in _stages(log1, hit=False) if s == "train"}
    landed = {(s, k) for s, k in _stages(log1, hit=False) if s != "train"}  # Base's evaluation, CFS's samples

    (store_copy / "train").unlink()
    second = subprocess.run(args, cwd=ROOT, capture_output=True, text=True)
    assert second.returncode == 0, second.stderr[-3000:]
    log2 = Store(store_copy).log()[len(log1):]
    missed = _stages(log2, hit=False)
    assert [s for s, _ in missed] == ["train", "evaluate", "train", "evaluate"]  # FT's, then CFS's
    assert {k for s, k in missed if s == "train"} == failed_trainings  # the same trainings, now done
    assert landed <= set(_stages(log2, hit=True))  # nothing that landed the first time ran again
    assert not {k for s, k in missed if s == "evaluate"} & {k for s, k in landed if s == "evaluate"}
    labels = [json.loads((sweep / str(i) / "results.json").read_text())["label"] for i in range(3)]
    assert labels == ["Base", "FT", "CFS"]
    assert all(f"| {label} |" in (sweep / "report.md").read_text() for label in labels)
