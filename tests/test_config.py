"""Every yaml in conf/ composes and validates; bad values fail at composition with one clear line."""
from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import CONF, ROOT, compose
from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from forgetting.config import ConfigError

GROUP_OPTIONS = sorted(
    (group.name, path.stem)
    for group in CONF.iterdir() if group.is_dir() and group.name != "hydra"
    for path in group.glob("*.yaml")
)


# options with a mandatory value (``???``) get one here, as a user must give it on the command line
REQUIRED = {("dataset", "jsonl"): ["dataset.path=data.jsonl"]}


def _overrides(group: str, name: str) -> list[str]:
    option = f"+experiment={name}" if group == "experiment" else f"{group}={name}"
    return [option, *REQUIRED.get((group, name), [])]


def test_every_group_has_options():
    groups = {g for g, _ in GROUP_OPTIONS}
    assert {"model", "method", "dataset", "eval", "generator", "trainer", "logger", "experiment"} <= groups


@pytest.mark.parametrize("group,name", GROUP_OPTIONS, ids=[f"{g}/{n}" for g, n in GROUP_OPTIONS])
def test_every_config_composes(group, name):
    c = compose(*_overrides(group, name))
    if group in ("model", "method", "dataset", "eval", "generator", "trainer", "logger", "world"):
        assert getattr(c, group).name == name if hasattr(getattr(c, group), "name") else True


@pytest.mark.parametrize("override,needle", [
    ("method.ratio=-1", "method.ratio=-1"),
    ("method.weight=-0.5", "method.weight=-0.5"),
    ("generator.temperature=0", "generator.temperature=0"),
    ("generator.top_p=1.5", "generator.top_p=1.5"),
    ("trainer.lr=0", "trainer.lr=0"),
    ("method.alpha=2", "method.alpha=2"),
])
def test_invalid_values_fail_with_named_value(override, needle):
    with pytest.raises(ConfigError) as err:
        compose(override)
    message = str(err.value)
    assert needle in message.replace(".0", "") or needle in message
    assert "expected" in message and "\n" not in message


@pytest.mark.parametrize("override", ["method=nonexistent", "method.nonexistent_key=1", "method.augment=telepathy"])
def test_unknown_names_and_keys_fail_at_compose_time(override):
    with pytest.raises((HydraException, OmegaConfBaseException)):
        compose(override)


def test_launcher_reports_bad_value_in_one_line_and_exits_nonzero(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "launch.py"), "method.ratio=-1", f"store_dir={tmp_path}",
                           f"hydra.run.dir={tmp_path / 'run'}"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == ["error: method.ratio=-1.0 is invalid: expected a number >= 0"]
    assert not any(tmp_path.iterdir()) or not (tmp_path / "world").exists()  # nothing was built


def test_help_and_cfg_job_work():
    for args in (["--help"], ["--cfg", "job"]):
        proc = subprocess.run([sys.executable, str(ROOT / "launch.py"), *args], capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == 0, proc.stderr
    assert "augment: none" in proc.stdout and "temperature: 1.0" in proc.stdout


@pytest.mark.parametrize("overrides,key", [
    (["dataset=jsonl", "dataset.path=/nonexistent/data.jsonl"], "dataset.path"),
    (["model.source=hf", "model.path=/nonexistent/model"], "model.path"),
    (["method=replay", "replay.source=jsonl", "replay.path=./nonexistent/*.json.gz"], "replay.path"),
])
def test_missing_local_paths_fail_before_any_stage(overrides, key):
    with pytest.raises(ConfigError, match=f"{key}=.* expected an existing local path"):
        compose(*overrides)
