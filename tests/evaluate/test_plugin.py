"""An evaluator added from outside the package (tests/evaluate/plugins/drift.py): its knobs compose and are checked,
its metric lands in results.json with its declared direction, the report reads that direction, and its settings
enter the evaluate key, with nothing in the package touched.

    pytest tests/evaluate/test_plugin.py
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT

from forgetting.report import main as report_main


def _evaluate_key(run: dict) -> str:
    return next(a["key"] for a in run["artifacts"]["used"] if a["stage"] == "evaluate")


@pytest.mark.timeout(1200)
def test_an_evaluator_added_outside_the_package(store_copy, tmp_path):
    env = {**os.environ, "FORGETTING_PLUGINS": "drift", "PYTHONPATH": str(ROOT / "tests" / "evaluate" / "plugins")}
    args = [sys.executable, str(ROOT / "launch.py"), "--multirun", "debug=micro", "method=base,ft",
            f"store_dir={store_copy}", "eval.tasks=[]", "eval.downstream=[]", "eval.drift=true",
            "eval.drift_min_norm=0,0.5", f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = [json.loads((tmp_path / "sweep" / str(i) / "results.json").read_text()) for i in range(4)]
    base = [r for r in runs if r["method"] == "base"]
    ft = sorted((r for r in runs if r["method"] == "ft"), key=lambda r: r["overrides"])
    assert all("pre/weight_drift/relative" not in r["metrics"] for r in base)  # the base did not move: off
    drift = ft[0]["metrics"]["pre/weight_drift/relative"]
    assert 0 < drift < 1
    assert ft[0]["metric_info"]["pre/weight_drift/relative"] == {"evaluator": "drift", "higher_is_better": False,
                                                                 "averaged": False}
    # its settings are in the evaluate key (min_norm 0 vs 0.5), and only where it runs (the base's is shared)
    assert _evaluate_key(ft[0]) != _evaluate_key(ft[1])
    assert _evaluate_key(base[0]) == _evaluate_key(base[1])

    report_main([str(tmp_path / "sweep"), "--out", str(tmp_path / "report")])
    table = (tmp_path / "report" / "report.md").read_text()
    assert "weight_drift relative ↓" in table  # the declared direction, not the name's (no /loss suffix)

    bad = subprocess.run([*args[:4], "method=ft", "eval.drift_min_norm=-1", *args[5:-2], args[-1]], env=env,
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "eval.drift_min_norm=-1" in bad.stderr
