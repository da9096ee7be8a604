"""Sweeps on a cluster: `hydra/launcher=slurm` becomes an sbatch job array with the configured knobs, and a
relaunched sweep (a requeued or resubmitted one) finishes only what is missing.

    pytest tests/test_relaunch.py
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import CONF, ROOT, compose

from forgetting.store import Store


def _hydra_config(*overrides: str):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from forgetting.compose import register

    register()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=list(overrides), return_hydra_config=True)


def test_slurm_launcher_composes_into_an_sbatch_job_array(tmp_path, monkeypatch):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="needs the slurm extra (in .[dev])")
    import submitit
    from hydra.utils import instantiate
    from submitit.slurm.slurm import SlurmExecutor

    defaults = _hydra_config("hydra/launcher=slurm").hydra.launcher
    assert defaults._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert (defaults.gpus_per_node, defaults.tasks_per_node, defaults.nodes) == (8, 1, 1)  # one 8B point per node
    assert defaults.max_num_timeout > 0 and defaults.signal_delay_s > 0  # timed-out tasks are requeued
    assert compose("hydra/launcher=slurm", "debug=micro").world.name == "micro"  # the job config is unchanged

    cfg = _hydra_config("hydra/launcher=slurm", f"hydra.sweep.dir={tmp_path / 'sweep'}",
                        "hydra.launcher.partition=gpu", "hydra.launcher.gpus_per_node=4",
                        "hydra.launcher.timeout_min=90", "hydra.launcher.array_parallelism=2")
    # the plugin's own launch(), up to the submission: no cluster here, so srun is "found" and nothing is sent
    monkeypatch.setattr(SlurmExecutor, "affinity", classmethod(lambda cls: 2))
    submitted = {}

    def map_array(self, fn, *args):
        submitted.update(executor=self._executor, args=args)
        return []

    monkeypatch.setattr(submitit.AutoExecutor, "map_array", map_array)
    launcher = instantiate(cfg.hydra.launcher)
    launcher.setup(hydra_context=None, task_function=lambda c: None, config=cfg)
    launcher.launch([["method=ft"], ["method=cfs"], ["method=base"]], initial_job_idx=0)

    overrides, _, job_nums, *_ = submitted["args"]
    assert overrides == (["method=ft"], ["method=cfs"], ["method=base"]) and job_nums == (0, 1, 2)
    sbatch = submitted["executor"]._make_submission_file_text("python -u job.py", "uid").splitlines()
    for line in ("#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=4", "#SBATCH --time=90",
                 "#SBATCH --ntasks-per-node=1", f"#SBATCH --signal=USR2@{defaults.signal_delay_s}",
                 f"#SBATCH --cpus-per-task={defaults.cpus_per_task}", f"#SBATCH --mem={defaults.mem_gb}GB"):
        assert line in sbatch
    assert submitted["executor"].max_num_timeout == defaults.max_num_timeout
    assert submitted["executor"].parameters["array_parallelism"] == 2


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
