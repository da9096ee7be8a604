"""The launcher: compose the config, validate it, run the pipeline.

    python launch.py                                    # FT on the toy world
    python launch.py -m method=base,ft,cfs seed=0,1,2   # a sweep; each run writes results.json
    python launch.py +experiment=main                   # the main job (what `make run` runs)
"""
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from forgetting.config import ConfigError, check_installed, register, validate

register()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> None:
    try:
        c = validate(cfg)
        check_installed(c)  # optional extras (vLLM) the run needs, before any stage starts
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    from forgetting.pipeline import run

    hc = HydraConfig.get()
    result = run(c, run_dir=Path(hc.runtime.output_dir),
                 overrides=list(hc.overrides.task))
    print(f"[{result['label']} seed={result['seed']}] " + "  ".join(
        f"{k}={v:.4f}" for k, v in result["metrics"].items()))


if __name__ == "__main__":
    main()
