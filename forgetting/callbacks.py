"""Hydra callbacks: after a multirun, write and print the sweep's paper-shaped report (and, with logger=wandb,
log it as an artifact of a ``report`` run in the sweep's W&B group); before a SLURM sweep, refuse a time limit that
its warning signal leaves no room in (docs/slurm.md).

    python launch.py -m method=base,ft,cfs       # ends with the table, report.md/.csv and frontier.png
    python launch.py -m method=base,ft,cfs --plan    # ends with the sweep's plan: distinct stages, time, what fits
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from forgetting import tracking
from forgetting.plan import summary
from forgetting.report import NoResults, write_report

SLURM_CHECK_PERIOD_S = 30  # slurmctld's time-limit checks (SLURM 22.05, measured; `man sbatch`: up to 60 s early)


def check_slurm_time_limit(timeout_min: int, signal_delay_s: int) -> str | None:
    """What is wrong with a SLURM task's time limit and warning signal, or None. slurmctld sends
    ``--signal=USR2@<signal_delay_s>`` at the first of its checks (every 30 s) that finds the job within
    ``signal_delay_s`` + 30 s of its limit: when that is the whole limit, every attempt is signalled in its first
    30 s, before it trains a step, and is requeued with nothing done until ``max_num_timeout`` runs out (or the
    signal comes before submitit handles it, and kills the task with no result)."""
    if signal_delay_s + SLURM_CHECK_PERIOD_S < timeout_min * 60:
        return None
    return (f"hydra.launcher.signal_delay_s={signal_delay_s} is invalid with hydra.launcher.timeout_min={timeout_min}: "
            f"expected less than {timeout_min * 60 - SLURM_CHECK_PERIOD_S} s (timeout_min × 60 − "
            f"{SLURM_CHECK_PERIOD_S}): SLURM checks time limits every {SLURM_CHECK_PERIOD_S} s and would signal every "
            f"attempt within {SLURM_CHECK_PERIOD_S} s of its start, before it trains (docs/slurm.md)")


class Report(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        launcher = config.hydra.launcher
        if str(launcher.get("_target_", "")).endswith(".SlurmLauncher"):
            problem = check_slurm_time_limit(launcher.timeout_min, launcher.signal_delay_s)
            if problem:  # before anything is submitted; an exception here would be only a warning (Hydra's callbacks)
                print(f"error: {problem}", file=sys.stderr)
                sys.exit(2)

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:

        sweep = Path(config.hydra.sweep.dir)
        if os.environ.get("FORGETTING_PLAN") == "1":  # launch.py --plan: plans, no results; their summary

            text = summary(sweep)
            if text:
                print("\n" + text)
            return
        try:
            markdown = write_report([sweep], sweep)
        except NoResults as err:
            print(f"report: {err}", file=sys.stderr)
            return
        print("\n" + markdown)
        written = [sweep / f for f in ("report.md", "report.csv", "frontier.png") if (sweep / f).exists()]
        print(f"report: {', '.join(map(str, written))}")  # no frontier.png when nothing can be plotted (report.md: why)
        if config.logger.name == "wandb":
            from omegaconf import OmegaConf


            logger = OmegaConf.to_object(config.logger)
            tracking.log_report(logger, logger.group or tracking.sweep_group(config.hydra), sweep)
