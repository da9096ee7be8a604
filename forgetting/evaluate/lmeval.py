"""The lm-eval adapter: ``simple_evaluate`` on an in-memory model, and results as ``group/task/metric``.

    pytest tests/evaluate/test_lmeval.py

The toy world's probes are ordinary lm-eval tasks: YAML files written next to the data they point at
(``dataset_path: json``) and loaded with ``TaskManager(include_path=...)``. Multiple-choice probes are scored by
log-likelihood (``acc``); the downstream task by greedy generation and strict-match exact match, as GSM8K is.
"""
from __future__ import annotations

from pathlib import Path

import yaml

TOY_PROBES = ("facts", "categories", "agreement", "patterns")
# MetaMathQA's responses end "The answer is: N"; strict match takes N exactly as lm-eval's gsm8k takes "#### N"
ANSWER_REGEX = r"The answer is: (\-?[0-9\.\,]+)"


def _mc_task(name: str, data: Path) -> dict:
    return {
        "task": name,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data)}},
        "test_split": "test",
        "output_type": "multiple_choice",
        "doc_to_text": "{{context}}",
        "doc_to_choice": "{{choices}}",
        "doc_to_target": "{{label}}",
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
        "metadata": {"version": 1.0},
    }


def _arith_task(name: str, data: Path, prompt_template: str, max_gen_toks: int) -> dict:
    return {
        "task": name,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data)}},
        "test_split": "test",
        "output_type": "generate_until",
        "doc_to_text": prompt_template.replace("{query}", "{{query}}"),
        "doc_to_target": "{{answer}}",
        "generation_kwargs": {"until": ["Question :", "\n"], "do_sample": False, "max_gen_toks": max_gen_toks},
        "filter_list": [{"name": "strict-match", "filter": [
            {"function": "regex", "regex_pattern": ANSWER_REGEX}, {"function": "take_first"}]}],
        "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True,
                         "ignore_case": True, "ignore_punctuation": False}],
        "metadata": {"version": 1.0},
    }


def write_toy_tasks(world_dir: Path, out_dir: Path, prompt_template: str, max_gen_toks: int) -> Path:
    """Write the toy world's lm-eval task YAMLs into ``out_dir`` (an include path)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tasks = [_mc_task(f"toy_{p}", world_dir / f"probe_{p}.jsonl") for p in TOY_PROBES]
    tasks.append(_arith_task("toy_arith", world_dir / "down_test.jsonl", prompt_template, max_gen_toks))
    for t in tasks:
        (out_dir / f"{t['task']}.yaml").write_text(yaml.safe_dump(t, sort_keys=False))
    return out_dir


def run_lmeval(model, tokenizer, tasks: list[str], *, include_path: Path | None = None,
               num_fewshot: int | None = None, limit: int | None = None, batch_size: int = 64,
               hflm_args: dict | None = None) -> dict:
    """Raw ``simple_evaluate`` results for an in-memory model (or a path/hub id in ``model``)."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    device = str(next(model.parameters()).device) if hasattr(model, "parameters") else "cpu"
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device=device,
              **(hflm_args or {}))
    local = {p.stem for p in Path(include_path).glob("*.yaml")} if include_path else set()
    # indexing lm-eval's built-in tasks costs ~15 s; skip it when every task is one of ours
    manager = TaskManager(include_path=str(include_path) if include_path else None,
                          include_defaults=not set(tasks) <= local)
    return lm_eval.simple_evaluate(model=lm, tasks=list(tasks), num_fewshot=num_fewshot, limit=limit,
                                   task_manager=manager, log_samples=False, bootstrap_iters=0)


def task_short_name(task: str) -> str:
    return task[len("toy_"):] if task.startswith("toy_") else task


def extract(results: dict, tasks: list[str], group: str, metrics: dict[str, str]) -> dict[str, float]:
    """``{group/task/metric: value}`` from lm-eval results; ``metrics`` maps a task to its ``metric,filter``
    key (default ``acc,none``). A task that lm-eval did not report is an error, not a silent zero."""
    out = {}
    for task in tasks:
        key = metrics.get(task, "acc,none")
        try:
            value = results["results"][task][key]
        except KeyError:
            have = sorted(results.get("results", {}).get(task, {}))
            raise KeyError(f"lm-eval reported no {key!r} for task {task!r}: it has {have}") from None
        out[f"{group}/{task_short_name(task)}/{key.split(',')[0]}"] = float(value)
    return out
