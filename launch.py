"""The launcher (forgetting/cli.py; ``pip install .`` also installs it as the ``forgetting`` command): compose the
config, validate it and what it reads, run the pipeline.

    python launch.py                                    # FT on the toy world
    python launch.py -m method=base,ft,cfs seed=0,1,2   # a sweep; each run writes results.json
    python launch.py +experiment=main                   # the main job (what `make run` runs)
    python launch.py +experiment=olmo_table2 --plan     # what it would build, with keys, memory and time; runs nothing
"""
from forgetting.cli import cli

if __name__ == "__main__":
    cli()
