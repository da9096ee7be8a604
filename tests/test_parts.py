"""Method parts: a part added outside the package (module + yaml, tests/parts/) runs through the whole pipeline,
and the registry refuses what would make keys or knobs ambiguous.

    pytest tests/test_parts.py
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT
from safetensors.torch import load_file

from forgetting.parts import base as parts_base
from forgetting.parts import load
from forgetting.parts.base import Regularizer, register
from forgetting.registry import Registry


def _norm(model_dir) -> float:
    return sum(float(t.float().pow(2).sum()) for t in load_file(str(model_dir / "model.safetensors")).values())


def test_a_part_added_outside_the_package_runs_end_to_end(store_copy, tmp_path):
    """tests/parts/shrink.py and tests/parts/conf/method/shrink.yaml are all it takes: the method composes,
    validates its knob, trains with the part's optimizer hook, logs its value and labels its report row."""
    env = {**os.environ, "FORGETTING_PARTS": "shrink", "PYTHONPATH": str(ROOT / "tests" / "parts")}
    args = [sys.executable, str(ROOT / "launch.py"), "--multirun", "debug=micro", "method=ft,shrink",
            f"store_dir={store_copy}", "eval.tasks=[]", "eval.downstream=[]", "trainer.lr=3e-2",
            f"hydra.searchpath=[file://{ROOT / 'tests' / 'parts' / 'conf'}]", f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ft, shrink = (json.loads((tmp_path / "sweep" / str(i) / "results.json").read_text()) for i in (0, 1))
    assert (ft["label"], shrink["label"]) == ("FT (lr=0.03)", "Shrink (lr=0.03)")
    assert ft["artifacts"]["model"] != shrink["artifacts"]["model"]
    # a pull of lr * 0.5 per step towards zero over 6 steps: a smaller norm than FT's
    assert _norm(store_copy / "train" / shrink["artifacts"]["model"]) < _norm(store_copy / "train" /
                                                                             ft["artifacts"]["model"])
    logged = [json.loads(line) for line in open(tmp_path / "sweep" / "1" / "train_log.jsonl")]
    assert any(e.get("shrink") == 0.5 for e in logged)

    bad = subprocess.run([*args[:4], "method=shrink", "method.shrink=-1", *args[5:]], env=env, capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode != 0 and "method.shrink=-1" in bad.stderr


def test_a_knob_name_belongs_to_one_part(monkeypatch):
    load()  # the package's parts, Wise-FT's among them (run alone, no other test has imported them)
    monkeypatch.setattr(parts_base, "PARTS", {k: Registry(v.what, v) for k, v in parts_base.PARTS.items()})
    monkeypatch.setattr(parts_base, "_KNOBS", dict(parts_base._KNOBS))
    from dataclasses import dataclass

    @dataclass
    class Clash:
        alpha: float = 0.3  # Wise-FT's knob

    class Other(Regularizer):
        name = "other"
        Knobs = Clash

    with pytest.raises(TypeError, match="knob 'alpha' is already a knob"):
        register(Other)

    class Dup(Regularizer):
        name = "l2"

    with pytest.raises(TypeError, match="name='l2' is invalid"):
        register(Dup)


def test_every_part_pickles_for_training_workers():
    """Trainer hooks travel to DeepSpeed's worker processes by pickle."""
    import pickle

    from forgetting.compose import MethodConfig

    for preset in ({"regularizer": "l2"}, {"optimizer": "adamw8bit"}, {"adapter": "lora"}):
        parts = MethodConfig(**preset).parts()
        again = pickle.loads(pickle.dumps(parts))
        assert {k: p.spec() for k, p in again.items()} == {k: p.spec() for k, p in parts.items()}


class _Counting(Regularizer):
    """Not registered: a hook that sees every micro-batch step and logs how many it saw."""

    name = "counting"

    def __init__(self):
        super().__init__()
        self.calls = 0

    def training_step(self, trainer, step, model, inputs, num_items_in_batch=None):
        self.calls += 1
        return step(model, inputs, num_items_in_batch)

    def log(self, trainer, logs: dict) -> None:
        logs["steps_seen"] = self.calls


def test_trainer_hooks_wrap_every_micro_batch_step(micro_store, tmp_path):
    from conftest import compose

    from forgetting.config import TrainerConfig
    from forgetting.data.datasets import load_downstream
    from forgetting.pipeline import base_stage, world_stage
    from forgetting.runtime import encode_example, load
    from forgetting.store import Store
    from forgetting.train.trainer import train

    c = compose("debug=micro", f"store_dir={micro_store}")
    store = Store(micro_store)
    world = world_stage(c, store)
    model, tok = load(c, base_stage(c, store, world))
    rows = [encode_example(tok, c, r["query"], r["response"]) for r in load_downstream(c.dataset, world)[:16]]
    hook = _Counting()
    t = TrainerConfig(lr=1e-3, batch_size=4, grad_accum=2, logging_steps=1, save_steps=100)
    train(model, tok, rows, tmp_path / "out", tmp_path / "work", t, steps=3, hooks=[hook])
    assert hook.calls == 3 * 2  # 3 optimizer steps of 2 micro-batches
    logged = [json.loads(line) for line in open(tmp_path / "out" / "train_log.jsonl")]
    assert [e["steps_seen"] for e in logged if "loss" in e] == [2, 4, 6]
