"""Experiment tracking: ``logger=wandb`` gives one W&B run per sweep point; ``logger=none`` (the default) keeps
the local record only (``results.json`` and ``train_log.jsonl`` in each run dir).

    python launch.py -m method=base,ft,cfs logger=wandb logger.project=cfs     # one W&B group per sweep
    WANDB_MODE=offline python launch.py logger=wandb debug=micro                # runs land in $WANDB_DIR/wandb/
    pytest tests/test_tracking.py

A run holds the full resolved config, the training curves (HF Trainer's own ``WandbCallback``: ``report_to="wandb"``
logs into the active run; when training was a cache hit, the stored ``train_log.jsonl`` is logged instead), a
table of generated samples, and the final metrics as its summary. Runs of one sweep share a group (the experiment
name and the Hydra sweep dir) and a run id derived from the point's overrides, so a requeued SLURM task resumes its
own run rather than adding one. The multirun report (``forgetting.callbacks.Report``) is logged as an artifact of
a ``report`` run in the same group.

wandb is imported only here, and only with ``logger=wandb``. W&B never stops an experiment: if ``wandb.init``
fails (no network, no API key) the process warns once and logs offline (upload later with ``wandb sync``); if
even that fails, the run goes untracked.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Callable, Optional

from forgetting.compose import Config
from forgetting.config import LoggerConfig
from forgetting.errors import ConfigError
from forgetting.store import key_of

log = logging.getLogger("forgetting")

_online_failed = False  # W&B was unreachable once: later runs of this process go offline without waiting again


class Tracker:
    """No tracking (``logger=none``, a non-zero rank, or W&B unavailable): every call is a no-op."""

    report_to = "none"  # TrainingArguments.report_to

    def samples(self, rows: list[dict], source: str, tokenizer: Callable[[], Any]) -> None:
        pass

    def finish(self, metrics: Optional[dict] = None, train_log: Optional[Path] = None, failed: bool = False) -> None:
        pass


_active: Tracker = Tracker()


def current() -> Tracker:
    """The tracker of the run in progress (stages call this; like ``wandb.run``, there is one per process)."""
    return _active


class WandbTracker(Tracker):
    report_to = "wandb"

    def __init__(self, run, log_samples: int):
        self.run, self.log_samples = run, log_samples

    def samples(self, rows: list[dict], source: str, tokenizer: Callable[[], Any]) -> None:
        """The first ``log_samples`` augmentation rows as a table: prompt (CS) and the text trained on."""
        import wandb

        rows = rows[: self.log_samples]
        if not rows:
            return
        tok = tokenizer() if any("ids" in r for r in rows) else None
        table = wandb.Table(columns=["index", "source", "prompt", "text", "tokens"])
        for i, r in enumerate(rows):
            if "text" in r:  # replay: a pretraining document
                table.add_data(i, source, "", r["text"], None)
                continue
            k = r["n_prompt"]
            table.add_data(i, source, tok.decode(r["ids"][:k], skip_special_tokens=True),
                           tok.decode(r["ids"][k:], skip_special_tokens=True), len(r["ids"]) - k)
        self.run.log({"samples": table})

    def finish(self, metrics: Optional[dict] = None, train_log: Optional[Path] = None, failed: bool = False) -> None:
        global _active
        _active = Tracker()
        try:
            if train_log is not None and train_log.exists() and self.run.summary.get("train/global_step") is None:
                _log_curves(self.run, train_log)  # training was a cache hit: the stored curves
            if metrics:
                self.run.summary.update(metrics)
            self.run.finish(exit_code=1 if failed else 0)
        except Exception as err:  # the results are on disk already: a tracking failure must not end the sweep
            log.warning("W&B: could not finish run %s (%s)", self.run.id, " ".join(str(err).split())[:300])


def _log_curves(run, train_log: Path) -> None:
    """HF Trainer's log history, under the names its WandbCallback uses (``train/loss`` over
    ``train/global_step``)."""
    run.define_metric("train/global_step")
    run.define_metric("train/*", step_metric="train/global_step")
    for line in train_log.read_text().splitlines():
        entry = json.loads(line)
        step = entry.pop("step", None)
        if "train_loss" in entry:  # the closing summary entry (train_runtime, train_loss, ...)
            run.summary.update(entry)
        else:
            run.log({**{f"train/{k}": v for k, v in entry.items()}, "train/global_step": step})


def sweep_group(hydra_cfg) -> Optional[str]:
    """The default group of a multirun: the experiment preset's name, if any, and the sweep dir's last two parts
    (``table2-2026-11-23_12-00-00``). ``None`` outside a multirun."""
    if hydra_cfg is None or str(hydra_cfg.mode) != "RunMode.MULTIRUN":
        return None
    stamp = "_".join(Path(str(hydra_cfg.sweep.dir)).parts[-2:])
    experiment = hydra_cfg.runtime.choices.get("experiment")
    return f"{experiment}-{stamp}" if experiment else stamp


def _hydra_cfg():
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get() if HydraConfig.initialized() else None


def start(c: Config, label: str, overrides: list[str]) -> Tracker:
    """Open this run's tracker; call ``finish`` on what it returns."""
    global _active
    lg = c.logger
    if lg.name == "none" or lg.mode == "disabled" or int(os.environ.get("RANK", "0")) != 0:
        _active = Tracker()
        return _active
    wandb = _import_wandb()
    group = lg.group or sweep_group(_hydra_cfg())
    # same sweep, same point → same run: a requeued or relaunched task resumes it instead of adding one
    run_id = _run_id(lg, group, [*overrides, f"seed={c.seed}"]) if group else None
    config = _config_dict(c)
    config["run"] = {"label": label, "overrides": list(overrides)}
    run = _init(wandb, lg, project=lg.project, entity=lg.entity, group=group, name=f"{label} seed={c.seed}",
                tags=list(lg.tags), config=config, job_type="train" if c.method.train else "eval", id=run_id,
                resume="allow" if run_id else None)
    _active = WandbTracker(run, lg.log_samples) if run is not None else Tracker()
    return _active


def log_report(lg: LoggerConfig, group: Optional[str], sweep_dir: Path) -> None:
    """The multirun report (report.md, report.csv, frontier.png) as a ``report`` artifact of a small run of
    ``job_type="report"`` in the sweep's group, with the table and the plot also shown in the run."""
    if lg.name == "none" or lg.mode == "disabled":
        return
    wandb = _import_wandb()
    run = _init(wandb, lg, project=lg.project, entity=lg.entity, group=group, name="report", job_type="report",
                tags=list(lg.tags), config={"sweep_dir": str(sweep_dir)})
    if run is None:
        return
    try:
        files = [sweep_dir / f for f in ("report.md", "report.csv", "frontier.png") if (sweep_dir / f).exists()]
        artifact = wandb.Artifact(f"report-{_slug(group or sweep_dir.name)}", type="report")
        for f in files:
            artifact.add_file(str(f))
        run.log_artifact(artifact)
        logs = {}
        if (sweep_dir / "report.csv").exists():
            import csv

            with open(sweep_dir / "report.csv", newline="") as f:
                header, *rows = list(csv.reader(f))
            logs["report"] = wandb.Table(columns=header, data=rows)
        if (sweep_dir / "frontier.png").exists():
            logs["frontier"] = wandb.Image(str(sweep_dir / "frontier.png"))
        if logs:
            run.log(logs)
    finally:
        run.finish()


def _import_wandb():
    try:
        import wandb
    except ImportError as err:
        raise ConfigError("logger.name='wandb' needs wandb, which is not installed: expected "
                          "`pip install -e '.[wandb]'`, or logger=none") from err
    return wandb


def _init(wandb, lg: LoggerConfig, **kwargs):
    """``wandb.init`` that cannot stop the experiment: online → offline (warned once per process) → untracked."""
    global _online_failed
    mode = "offline" if lg.mode == "online" and _online_failed else lg.mode
    for attempt in ("online", "offline") if mode == "online" else (mode,):
        # a new Settings each time: wandb.init writes the attempt's run id into the one it is given
        settings = wandb.Settings(init_timeout=lg.init_timeout, finish_timeout=lg.finish_timeout)
        try:
            return wandb.init(mode=attempt, reinit="finish_previous", settings=settings, **kwargs)
        except Exception as err:  # any W&B failure (network, auth, service) must not end the experiment
            reason = " ".join(str(err).split())[:300]
            if attempt == "online":
                _online_failed = True
                # the timed-out online attempt may still hold its run id in wandb's service: take a fresh one
                kwargs.update(id=None, resume=None)
                log.warning("W&B could not start online (%s): logging offline under %s; upload later with "
                            "`wandb sync`",
                            reason, Path(os.environ.get("WANDB_DIR", ".")) / "wandb")
            else:
                log.warning("W&B failed to start (%s): this run is not tracked", reason)
    return None


def _config_dict(c: Config) -> dict:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.structured(c), resolve=True, enum_to_str=True)


def _run_id(lg: LoggerConfig, group: str, point: list[str]) -> str:

    return key_of("wandb-run", {"entity": lg.entity, "project": lg.project, "group": group, "point": sorted(point)})


def _slug(text: str) -> str:
    # artifact names allow letters, digits, '-', '_' and '.'
    return "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in text)
