"""``pip install .`` (not editable): the wheel holds the package and every config of conf/ (as forgetting/conf/), and
its ``forgetting`` command runs the main job from a directory that is not the repository, on the wheel's configs.

    pytest tests/test_wheel.py

The faithful, cheap path: the wheel built as ``pip install .`` builds it (offline: the installed setuptools, no build
isolation), installed with --no-deps into a --target directory that the console script's Python finds first (its
dependencies are this environment's). A fresh venv with all dependencies is docs/install.md's check.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import CONF, ROOT

SOURCES = ("forgetting", "conf", "pyproject.toml", "README.md")  # what building the wheel reads


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel of a copy of this checkout (a build writes build/ and *.egg-info/ next to its sources)."""
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / name, src / name)
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                           "-q", "-w", str(root / "dist"), str(src)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (found,) = (root / "dist").glob("forgetting-*.whl")
    return found


def test_the_wheel_holds_every_module_and_every_config(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    configs = {f"forgetting/conf/{p.relative_to(CONF).as_posix()}" for p in CONF.rglob("*.yaml")}
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "forgetting").rglob("*.py")}
    assert len(configs) > 50 and configs <= names, sorted(configs - names)
    assert "forgetting/conf/__init__.py" in names  # Hydra reads pkg:// only from a package
    missing = sorted({str(Path(m).parent).replace("/", ".") for m in modules - names})
    assert not missing, f"add {missing} to [tool.setuptools] packages in pyproject.toml"
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "forgetting = forgetting.cli:cli" in entry_points


@pytest.mark.slow  # ~40 s of CPU: three micro runs, and the install
def test_the_console_script_runs_the_main_job_from_another_directory(wheel, store_copy, tmp_path):
    """``forgetting +experiment=main debug=micro`` (Base, FT and CFS, then the report) with the wheel installed,
    from an empty directory: its configs are the wheel's (pkg://forgetting.conf), its outputs land in that directory,
    and it reuses the world and base the checkout's configs built (the same keys)."""
    target, cwd = tmp_path / "site", tmp_path / "x"
    cwd.mkdir()
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target",
                           str(target), str(wheel)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # the installed package first; not this checkout (PYTHONPATH from conftest's callers, the editable install)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HYDRA_FULL_ERROR")}
    env["PYTHONPATH"] = str(target)
    where = subprocess.run([sys.executable, "-c", "import forgetting.cli, forgetting.presets as p; "
                            "print(forgetting.cli.__file__); print(p.config_path())"],
                           cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert where.stdout.split() == [str(target / "forgetting" / "cli.py"), "pkg://forgetting.conf"], where.stderr
    script = target / "bin" / "forgetting"
    assert script.is_file()
    proc = subprocess.run([str(script), "+experiment=main", "debug=micro", f"store_dir={store_copy}"], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (sweep,) = (cwd / "outputs" / "multirun").glob("*/*")  # Hydra's outputs: relative to the working directory
    runs = [json.loads((sweep / str(i) / "results.json").read_text()) for i in range(3)]
    assert [r["label"] for r in runs] == ["Base", "FT", "CFS"]
    assert all(r["metrics"] for r in runs) and (sweep / "report.md").is_file()
    hydra_yaml = (sweep / "0" / ".hydra" / "hydra.yaml").read_text()
    assert "path: forgetting.conf\n      schema: pkg\n      provider: main" in hydra_yaml
    assert str(ROOT) not in hydra_yaml
    assert (sweep / "0" / "launch.log").is_file()
    log = [json.loads(line) for line in (store_copy / "log.jsonl").read_text().splitlines()]
    assert {e["stage"] for e in log if e["hit"]} >= {"world", "pretrain"}  # built by the checkout's compose
    assert {e["stage"] for e in log if not e["hit"]} >= {"train", "generate", "evaluate"}
