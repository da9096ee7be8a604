# This directory is the package forgetting.conf (pyproject.toml maps it; the wheel ships it as forgetting/conf/),
# which Hydra reads as pkg://forgetting.conf (forgetting/presets.py). Hydra needs this file to accept the package.
