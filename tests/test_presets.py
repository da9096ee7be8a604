"""Options that knobs name rather than select — ``eval.generative_from``, ``method.recycle_from`` (versions),
``method.recycle_method`` — are found as Hydra finds ``group=name``: on the search path of the config being run, so
an option added through ``hydra.searchpath`` serves them as it serves ``method=`` (forgetting/presets.py).

    pytest tests/test_presets.py
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import CONF, ROOT, compose
from omegaconf import OmegaConf

from forgetting.compose import MethodConfig
from forgetting.errors import ConfigError
from forgetting.parts.recycle import method_preset, version_overrides
from forgetting.presets import config_path, option, searching

# the named-knob overrides, on options that exist only in the temp dir, and the same with the built-in options they
# copy: every composed value and stage key must agree
KNOBS = ["method=recycle", "method.recycle_from=[vtmp]", "method.recycle_method=mtmp", "eval=etmp"]
BUILT_IN = ["method=recycle", "method.recycle_from=[v2]", "method.recycle_method=cfs", "eval=r1_suite"]


@pytest.fixture
def searchpath(tmp_path) -> Path:
    """A config dir with a version, a method and two eval options of its own (copies of built-in ones)."""
    for group in ("version", "method", "eval"):
        (tmp_path / group).mkdir()
    (tmp_path / "version" / "vtmp.yaml").write_text((CONF / "version" / "v2.yaml").read_text())
    (tmp_path / "method" / "mtmp.yaml").write_text((CONF / "method" / "cfs.yaml").read_text())
    (tmp_path / "eval" / "gtmp.yaml").write_text((CONF / "eval" / "reasoning.yaml").read_text())
    suite = (CONF / "eval" / "r1_suite.yaml").read_text()
    assert "generative_from: [reasoning, medical]" in suite
    (tmp_path / "eval" / "etmp.yaml").write_text(suite.replace("[reasoning, medical]", "[gtmp, medical]"))
    return tmp_path


def test_an_option_is_its_yaml_as_written():
    """Every option of conf/, read through Hydra's search path, is what the file says (what the knobs read before)."""
    files = [p for p in CONF.glob("*/*.yaml")]
    assert len(files) > 50
    for path in files:
        written = OmegaConf.to_container(OmegaConf.load(path)) or {}
        written.pop("defaults", None)
        assert option(path.parent.name, path.stem) == written, path
    assert option("method", "no_such_method") is None


def test_a_source_checkout_runs_with_its_own_conf():
    path = config_path()
    assert path == str(CONF) or path == "pkg://forgetting.conf" and option("method", "ft") is not None


def test_options_on_hydra_searchpath_serve_the_knobs_that_name_them(searchpath):
    c = compose("debug=micro", *KNOBS, f"hydra.searchpath=[file://{searchpath}]")
    ref = compose("debug=micro", *BUILT_IN)
    assert [b.name for b in c.eval.generative] == [b.name for b in ref.eval.generative]
    assert c.eval.generative == ref.eval.generative and len(c.eval.generative) == 7
    assert c.method.recycle_from == ["vtmp"] and c.method.recycle_method == "mtmp"
    with searching([f"file://{CONF}", f"file://{searchpath}"]):
        assert version_overrides("vtmp") == version_overrides("v2")
        assert method_preset(MethodConfig, "mtmp") == method_preset(MethodConfig, "cfs")
    for knob, value in (("eval.generative_from", "gtmp"), ("method.recycle_from", "vtmp"),
                        ("method.recycle_method", "mtmp")):  # without the search path: refused, naming the knob
        overrides = {"eval.generative_from": ["eval=r1_suite", "eval.generative_from=[gtmp]"],
                     "method.recycle_from": BUILT_IN[:1] + KNOBS[1:2],
                     "method.recycle_method": BUILT_IN[:2] + KNOBS[2:3]}[knob]
        with pytest.raises(ConfigError, match=re.escape(knob) + ".*" + value):
            compose("debug=micro", *overrides)


def _plan(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, str(ROOT / "launch.py"), "debug=micro", *args, f"store_dir={cwd / 'store'}",
                           f"hydra.run.dir={cwd / 'run'}", "--plan"], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def test_the_launcher_finds_them_on_hydra_searchpath_for_every_stage(searchpath, tmp_path):
    """Through launch.py (a running Hydra app): the plan of the recycle run, whose source fine-tune reads the version
    and the method preset and whose evaluation reads the suite, has the built-in options' keys, stage by stage."""
    runs = {"temp": [*KNOBS, f"hydra.searchpath=[file://{searchpath}]"], "built-in": BUILT_IN,
            "missing": KNOBS[:2]}  # the version only on the search path, which this run does not add
    for name in runs:
        (tmp_path / name).mkdir()
    with ThreadPoolExecutor(2) as pool:
        done = dict(zip(runs, pool.map(lambda n: _plan(runs[n], tmp_path / n), runs)))
    keys = {}
    for name in ("temp", "built-in"):
        assert done[name].returncode == 0, done[name].stderr[-3000:]
        keys[name] = re.findall(r"^  (\w+) +([0-9a-f]{16})", done[name].stdout, re.M)
    assert [s for s, _ in keys["temp"]].count("train") == 2 and "recycle" in dict(keys["temp"])
    assert keys["temp"] == keys["built-in"]
    assert done["missing"].returncode == 2
    assert done["missing"].stderr.strip().splitlines()[-1].startswith("error: method.recycle_from=['vtmp'] is invalid")
