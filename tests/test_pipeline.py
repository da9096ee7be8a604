"""The pipeline on the micro toy world: mixing, fixed steps, caching, resume, lm-eval equivalence."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import ROOT, compose

from forgetting.pipeline import base_stage, run, train_stage, world_stage
from forgetting.runtime import load
from forgetting.store import Store


def _train(store_root, *overrides):
    c = compose("debug=micro", f"store_dir={store_root}", *overrides)
    store = Store(store_root)
    world = world_stage(c, store)
    art = train_stage(c, store, base_stage(c, store, world), world)
    return json.loads((art.path / "train_summary.json").read_text())


def test_ratio_sets_synthetic_rows_and_steps_stay_fixed(store_copy):
    plain = _train(store_copy, "method=ft")
    half = _train(store_copy, "method=cfs", "method.ratio=0.5")
    double = _train(store_copy, "method=cfs", "method.ratio=2.0")
    n_down = 64  # conf/world/micro.yaml
    assert (plain["rows"], half["rows"], double["rows"]) == (n_down, n_down + 32, n_down + 128)
    assert plain["steps"] == half["steps"] == double["steps"] == 6  # debug=micro: trainer.max_steps=6


def test_steps_derived_from_downstream_epochs_are_the_same_for_every_mix(store_copy):
    a = _train(store_copy, "method=ft", "trainer.max_steps=null", "trainer.epochs=1")
    b = _train(store_copy, "method=cfs", "trainer.max_steps=null", "trainer.epochs=1", "method.ratio=2")
    assert a["steps"] == b["steps"] == 8  # ceil(1 * 64 / 8)


def test_training_moves_parameters(store_copy):
    c = compose("debug=micro", f"store_dir={store_copy}", "method=ft")
    store = Store(store_copy)
    world = world_stage(c, store)
    base = base_stage(c, store, world)
    tuned = train_stage(c, store, base, world)
    (m0, _), (m1, _) = load(c, base), load(c, tuned)
    diffs = [float((p0 - p1).abs().max()) for p0, p1 in zip(m0.parameters(), m1.parameters())]
    assert min(diffs) > 0  # every tensor moved


def test_second_run_of_a_finished_config_recomputes_nothing(store_copy, tmp_path):
    c = compose("debug=micro", f"store_dir={store_copy}", "method=cfs")
    first = run(c, tmp_path / "a")
    n = len(Store(store_copy).log())
    second = run(c, tmp_path / "b")
    again = Store(store_copy).log()[n:]
    assert again and all(e["hit"] for e in again)
    assert {e["stage"] for e in again} >= {"world", "pretrain", "generate", "train", "evaluate"}
    assert first["metrics"] == second["metrics"]
    saved = json.loads((tmp_path / "b" / "results.json").read_text())
    assert saved["metrics"] == second["metrics"] and saved["label"] == "CFS"


def test_killed_training_resumes_from_its_checkpoint(store_copy, tmp_path):
    """Kill a launch mid-training once a checkpoint exists; the rerun must resume there and finish."""
    args = [sys.executable, str(ROOT / "launch.py"), "debug=micro", f"store_dir={store_copy}", "method=ft",
            "trainer.max_steps=400", "trainer.save_steps=20", f"hydra.run.dir={tmp_path / 'run'}"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 240
    try:
        while time.time() < deadline and not list((store_copy / "train").glob(".work-*/checkpoint-*")):
            assert proc.poll() is None, "the run ended before its first checkpoint"
            time.sleep(0.2)
        assert list((store_copy / "train").glob(".work-*/checkpoint-*")), "no checkpoint within the deadline"
        time.sleep(0.5)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not [p for p in (store_copy / "train").iterdir() if not p.name.startswith(".")]  # nothing landed
    summary = _train(store_copy, "method=ft", "trainer.max_steps=400", "trainer.save_steps=20")
    assert summary["resumed_from"] is not None and "checkpoint-" in summary["resumed_from"]
    assert summary["steps"] == 400
    assert not list((store_copy / "train").glob(".work-*"))  # scratch removed once the artifact landed


def test_lm_eval_scores_of_in_memory_model_equal_saved_checkpoint(micro_store, tmp_path):
    from forgetting.evaluate.lmeval import extract, run_lmeval, write_toy_tasks

    c = compose("debug=micro", f"store_dir={micro_store}")
    store = Store(micro_store)
    world = world_stage(c, store)
    base = base_stage(c, store, world)
    model, tok = load(c, base)
    tasks = write_toy_tasks(world.path, tmp_path / "tasks", c.dataset.prompt_template, 16)
    names = ["toy_facts", "toy_agreement", "toy_arith"]
    metrics = {"toy_arith": "exact_match,strict-match"}
    mem = extract(run_lmeval(model, tok, names, include_path=tasks, batch_size=8), names, "x", metrics)
    disk = extract(run_lmeval(str(base.path), str(base.path), names, include_path=tasks, batch_size=8), names,
                   "x", metrics)
    assert mem == disk and set(mem) == {"x/facts/acc", "x/agreement/acc", "x/arith/exact_match"}


def test_generative_suite_runs_end_to_end_on_the_toy_model(micro_store, tmp_path):
    """eval=reasoning's machinery on the micro model: a tiny local math benchmark, per-sample records."""
    bench = ROOT / "tests" / "fixtures" / "benchmarks" / "aime24.jsonl"
    c = compose("debug=micro", f"store_dir={micro_store}", "method=base", "eval=reasoning",
                f"eval.generative=[{{name: aime, kind: math, path: '{bench}', split: train, n_samples: 2, "
                "max_new_tokens: 8, prompt_template: 'Question : {question}, Answer :'}]")
    result = run(c, tmp_path / "run")
    m = result["metrics"]
    assert 0.0 <= m["pre/aime/acc"] <= 1.0 and m["pre/avg"] == m["pre/aime/acc"]
    assert m["pre/aime/length_tokens"] > 0 and "pre/aime/wait_per_response" in m
    evaluation = [e for e in Store(micro_store).log() if e["stage"] == "evaluate"][-1]
    records = (micro_store / "evaluate" / evaluation["key"] / "records" / "aime.jsonl").read_text().splitlines()
    problems = bench.read_text().splitlines()
    assert len(records) == 2 * len(problems)
    first = json.loads(records[0])
    assert {"prompt", "response", "extracted", "correct"} <= set(first)
    assert first["prompt"].startswith("Question : ")


def test_a_suite_mixing_lm_eval_tasks_and_benchmarks_averages_both(micro_store, tmp_path):
    """pre/avg is the mean of every top-level pre-existing column, whichever evaluator made it: the toy lm-eval
    tasks and a generative benchmark here (before, the benchmark silently dropped out of the Avg.)."""
    bench = ROOT / "tests" / "fixtures" / "benchmarks" / "aime24.jsonl"
    c = compose("debug=micro", f"store_dir={micro_store}", "method=base", "eval.tasks=[toy_facts,toy_patterns]",
                "eval.downstream=[]", f"eval.generative=[{{name: aime, kind: math, path: '{bench}', split: train, "
                "n_samples: 1, max_new_tokens: 4, prompt_template: 'Question : {question}, Answer :'}]")
    m = run(c, tmp_path / "run")["metrics"]
    columns = [m["pre/facts/acc"], m["pre/patterns/acc"], m["pre/aime/acc"]]
    assert m["pre/avg"] == pytest.approx(sum(columns) / 3)
