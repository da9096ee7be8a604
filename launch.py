"""The launcher: compose the config, validate it and what it reads, run the pipeline.

    python launch.py                                    # FT on the toy world
    python launch.py -m method=base,ft,cfs seed=0,1,2   # a sweep; each run writes results.json
    python launch.py +experiment=main                   # the main job (what `make run` runs)
"""
import errno
import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from forgetting.config import ConfigError, check_inputs, check_installed, compose_error, register, validate
from forgetting.store import StoreError

register()
_running = False  # a run started: an exception from here on is the run's, not the command line's


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> None:
    global _running
    _running = True
    try:
        c = validate(cfg)
        check_installed(c)  # optional extras (vLLM) the run needs, before any stage starts
        check_inputs(c)  # the store, data files, tasks, model and tokenizer: before any stage starts
        from forgetting.pipeline import run

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
    try:
        main()
    except Exception as err:
        if full or _running:
            raise
        print(f"error: {compose_error(err, sys.argv[1:])}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    cli()
