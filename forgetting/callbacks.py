"""Hydra callbacks: after a multirun, write and print the sweep's paper-shaped report (and, with logger=wandb,
log it as an artifact of a ``report`` run in the sweep's W&B group).

    python launch.py -m method=base,ft,cfs       # ends with the table, report.md/.csv and frontier.png
    python launch.py -m method=base,ft,cfs --plan    # ends with the sweep's plan: distinct stages, time, what fits
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class Report(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        from forgetting.report import NoResults, write_report

        sweep = Path(config.hydra.sweep.dir)
        if os.environ.get("FORGETTING_PLAN") == "1":  # launch.py --plan: plans, no results; their summary
            from forgetting.plan import summary

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

            from forgetting import tracking

            logger = OmegaConf.to_object(config.logger)
            tracking.log_report(logger, logger.group or tracking.sweep_group(config.hydra), sweep)
