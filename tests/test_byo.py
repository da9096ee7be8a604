"""Bring your own task, end to end through launch.py: your train/test files scored, your lm-eval task included.

    pytest tests/test_byo.py
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import ROOT

# invented objects and their colours: nothing of the toy world, whose base model has never seen the format
COLOURS = {"zorp": "red", "blick": "blue", "quam": "green", "fent": "gold", "dravel": "red", "smoo": "blue",
           "pindle": "green", "wug": "gold"}
ASKS = ("What colour is the", "Tell me the colour of the", "Which colour has the", "Say the colour of the")


def _write(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _launch(store, out, *overrides, multirun=False):
    args = [sys.executable, str(ROOT / "launch.py"), *(["-m"] if multirun else []), "debug=micro",
            f"store_dir={store}", *overrides, f"hydra.{'sweep' if multirun else 'run'}.dir={out}"]
    proc = subprocess.run(args, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _results(run_dir) -> dict:
    return json.loads((run_dir / "results.json").read_text())


def test_own_train_and_test_files_are_scored_for_base_ft_and_cfs(store_copy, tmp_path):
    train = _write(tmp_path / "train.jsonl", [{"question": f"{ask} {thing}?", "answer": f"The answer is: {colour}"}
                                              for thing, colour in COLOURS.items() for ask in ASKS] * 2)
    test = _write(tmp_path / "test.jsonl", [{"question": f"What is the colour of the {thing}?",
                                             "answer": f"The answer is: {colour}"}
                                            for thing, colour in COLOURS.items()])
    data = ["dataset=jsonl", "dataset.name=colours", f"dataset.path={train}", f"dataset.test_path={test}",
            "dataset.query_field=question", "dataset.response_field=answer", "eval.downstream=[]"]
    _launch(store_copy, tmp_path / "sweep", "method=base,ft,cfs", *data, multirun=True)
    runs = {r["method"]: r for r in (_results(tmp_path / "sweep" / str(i)) for i in range(3))}
    assert set(runs) == {"base", "ft", "cfs"}
    for r in runs.values():
        m = r["metrics"]
        assert 0.0 <= m["down/colours/exact_match"] <= 1.0 and m["down/colours/loss"] > 0
        assert "pre/avg" in m and not any(k.startswith("down/arith") for k in m)  # eval.downstream=[]: no toy task
    # the answer tokens of the test split: learnt by fine-tuning on the train split (6 steps of the micro model)
    assert runs["ft"]["metrics"]["down/colours/loss"] < runs["base"]["metrics"]["down/colours/loss"]
    assert runs["cfs"]["metrics"]["down/colours/loss"] < runs["base"]["metrics"]["down/colours/loss"]
    report = (tmp_path / "sweep" / "report.md").read_text()
    assert "colours exact_match" in report and "colours loss ↓" in report

    # exact match compares the generation with the reference: a test split whose references are the base model's own
    # greedy answers (read from the evaluation's records) scores exactly 1 for Base
    evaluation = next(a["key"] for a in runs["base"]["artifacts"]["used"] if a["stage"] == "evaluate")
    records = [json.loads(line) for line in
               (store_copy / "evaluate" / evaluation / "records" / "colours.jsonl").read_text().splitlines()]
    assert [r["gold"] for r in records] == list(COLOURS.values()) and len(records) == len(COLOURS)
    assert all(r["response"].strip() for r in records)
    echo = _write(tmp_path / "echo.jsonl", [{"question": r["query"], "answer": r["response"]} for r in records])
    _launch(store_copy, tmp_path / "echo", "method=base", *data, f"dataset.test_path={echo}",
            "dataset.answer_pattern='(.+)'")
    assert _results(tmp_path / "echo")["metrics"]["down/colours/exact_match"] == 1.0


MC_TASK = """task: my_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{label}}}}"
metric_list:
  - metric: acc
metadata:
  version: 1.0
"""


def test_own_lm_eval_task_from_include_path_is_a_pre_existing_ability(store_copy, tmp_path):
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    choices = list(dict.fromkeys(COLOURS.values()))
    data = _write(tasks / "my_mc.jsonl", [{"question": f"The {thing} is", "choices": choices,
                                           "label": choices.index(colour)} for thing, colour in COLOURS.items()])
    (tasks / "my_mc.yaml").write_text(MC_TASK.format(data=data))
    _launch(store_copy, tmp_path / "run", "method=base", "eval.tasks=[toy_facts,my_mc]", f"eval.include_path=[{tasks}]")
    m = _results(tmp_path / "run")["metrics"]
    assert 0.0 <= m["pre/my_mc/acc"] <= 1.0
    assert m["pre/avg"] == (m["pre/my_mc/acc"] + m["pre/facts/acc"]) / 2
