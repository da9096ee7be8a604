"""The launcher: compose the config, validate it and what it reads, run the pipeline. ``forgetting`` (the console
script ``pip install .`` puts on the PATH, from any directory) and ``python launch.py`` (in a checkout) run it.

    forgetting                                          # FT on the toy world
    forgetting -m method=base,ft,cfs seed=0,1,2         # a sweep; each run writes results.json
    forgetting +experiment=main                         # the main job (what `make run` runs)
    forgetting +experiment=olmo_table2 --plan           # what it would build, with keys, memory and time; runs nothing

The configs are the package's (``pkg://forgetting.conf``: the repository's conf/, shipped in the wheel); relative
paths (``store_dir=.store``, Hydra's ``outputs/``, data files) are relative to the working directory.
"""
import errno
import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from forgetting.checks import check_inputs, check_installed
from forgetting.compose import Config, compose_error, register, validate
from forgetting.errors import ConfigError
from forgetting.machine import check_machine
from forgetting.pipeline import label_of, run
from forgetting.plan import preflight, print_plan
from forgetting.presets import CONFIG_NAME, config_path, initialize, searching
from forgetting.store import StoreError

register()
_running = False  # a run started: an exception from here on is the run's, not the command line's
PLAN_FLAG = "--plan"  # not a Hydra flag: cli() takes it off the command line (forgetting/plan.py)
PLAN_ENV = "FORGETTING_PLAN"  # set in plan mode, for the sweep callback (forgetting/callbacks.py)


@hydra.main(version_base="1.3", config_path=config_path(), config_name=CONFIG_NAME)
def main(cfg: DictConfig) -> None:
    global _running
    _running = True
    try:
        c = validate(cfg)
        if os.environ.get(PLAN_ENV) == "1":  # print what would run; load, build and write nothing

            hc = HydraConfig.get()
            print_plan(c, label_of(c, list(hc.overrides.task)), Path(hc.runtime.output_dir))
            _running = False
            return
        check_installed(c)  # optional extras (vLLM) the run needs, before any stage starts
        check_machine(c)  # GPUs, bf16, parallel sizes: what the settings ask of this machine's devices
        check_inputs(c)  # the store, data files, tasks, model and tokenizer: before any stage starts

        preflight(c)  # every stage to build fits its device (estimated, forgetting/estimate.py)

        hc = HydraConfig.get()
        result = run(c, run_dir=Path(hc.runtime.output_dir), overrides=list(hc.overrides.task))
    except (ConfigError, StoreError) as err:  # also what only a stage's output can reveal (a bad row of a hub
        print(f"error: {err}", file=sys.stderr)  # dataset), and a store that cannot hold a stage (a full disk)
        sys.exit(2)
    except OSError as err:
        if err.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        print(f"error: no space left on the device writing {err.filename or 'a file'}: expected room for the run's "
              f"outputs (store_dir={cfg.store_dir}, the run directory): free some space and rerun", file=sys.stderr)
        sys.exit(2)
    print(f"[{result['label']} seed={result['seed']}] " + "  ".join(
        f"{k}={v:.4f}" for k, v in result["metrics"].items()))
    _running = False


def cli() -> None:
    """``main``, with a command line Hydra cannot compose reported in one line too (Hydra's own report takes
    several); HYDRA_FULL_ERROR=1 keeps Hydra's traceback."""
    full = os.environ.get("HYDRA_FULL_ERROR") == "1"
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra then raises composition errors to us instead of printing them
    if PLAN_FLAG in sys.argv[1:]:
        # every job of a sweep prints its plan, here: a launcher that submits jobs (SLURM) would queue them
        sys.argv = [a for a in sys.argv if a != PLAN_FLAG and not a.startswith("hydra/launcher=")]
        sys.argv.append("hydra/launcher=basic")
        os.environ[PLAN_ENV] = "1"
    try:
        main()
    except Exception as err:
        if full or _running:
            raise
        print(f"error: {compose_error(err, sys.argv[1:])}", file=sys.stderr)
        sys.exit(2)


def compose(*overrides: str) -> Config:
    """The config the launcher would run with these command-line ``overrides``, validated into the typed object
    (options named by knobs, e.g. ``method.recycle_from``, found on its search path, ``hydra.searchpath`` included)."""
    from hydra import compose as hydra_compose
    from omegaconf import open_dict

    with initialize():
        cfg = hydra_compose(config_name=CONFIG_NAME, overrides=list(overrides), return_hydra_config=True)
    sources = list(cfg.hydra.runtime.config_sources)
    with open_dict(cfg):
        del cfg["hydra"]
    with searching(sources):
        return validate(cfg)


if __name__ == "__main__":
    cli()
