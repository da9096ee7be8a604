"""The lm-eval adapter: ``simple_evaluate`` on an in-memory model, and results as ``group/task/metric``.

    pytest tests/evaluate/test_lmeval_suite.py tests/evaluate/test_lmeval_fixtures.py

The toy world's probes are ordinary lm-eval tasks: YAML files written next to the data they point at
(``dataset_path: json``) and loaded with ``TaskManager(include_path=...)``. Multiple-choice probes are scored by
log-likelihood (``acc``); the downstream task by greedy generation and strict-match exact match, as GSM8K is.
``eval.include_path`` adds directories of task YAMLs the same way; lm-eval 0.4.13 indexes its built-in tasks
first and include paths after, so a local task or group of the same name replaces the built-in one
(tests/fixtures/lm_eval_tasks/ holds the OLMo suite's tasks on tiny local data, by their real names).
"""
from __future__ import annotations

from pathlib import Path

import yaml

from forgetting.evaluate.average import average
from forgetting.evaluate.examples import record
from forgetting.toy.world import ToyWorld

TOY_PROBES = ("facts", "categories", "agreement", "patterns")
TOY_TASKS = (*(f"toy_{p}" for p in TOY_PROBES), "toy_arith")  # what write_toy_tasks writes
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
    tasks = [_mc_task(f"toy_{p}", ToyWorld(world_dir).probe_file(p)) for p in TOY_PROBES]
    tasks.append(_arith_task("toy_arith", ToyWorld(world_dir).down_test_file, prompt_template, max_gen_toks))
    for t in tasks:
        (out_dir / f"{t['task']}.yaml").write_text(yaml.safe_dump(t, sort_keys=False))
    return out_dir


def run_lmeval(model, tokenizer, tasks: list[str], *, include_path: Path | list[Path] | None = None,
               num_fewshot: int | None = None, fewshot: dict[str, int] | None = None, limit: int | None = None,
               batch_size: int = 64, hflm_args: dict | None = None, gen_kwargs: dict | None = None,
               apply_chat_template: bool = False, fewshot_as_multiturn: bool = False) -> dict:
    """Raw ``simple_evaluate`` results for an in-memory model (or a path/hub id in ``model``).

    ``fewshot`` sets a task's shot count (gsm8k: 5, paper Appendix C); other tasks take ``num_fewshot``, and
    None leaves each task at its own YAML default (bbh's CoT few-shot exemplars, 0 where a task sets none).
    ``include_path``: one or more directories of task YAMLs; ``gen_kwargs`` (e.g. ``max_gen_toks``) applies to
    every generative task; ``apply_chat_template`` renders every prompt in the tokenizer's chat template, each
    few-shot exemplar as its own turns with ``fewshot_as_multiturn`` (``simple_evaluate``'s own arguments)."""
    from lm_eval.models.huggingface import HFLM

    device = str(next(model.parameters()).device) if hasattr(model, "parameters") else "cpu"
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device=device,
              **(hflm_args or {}))
    paths = [include_path] if isinstance(include_path, (str, Path)) else list(include_path or [])
    return evaluate_by_shots(lm, tasks, fewshot=fewshot, num_fewshot=num_fewshot,
                             task_manager=task_manager(tasks, paths), limit=limit, gen_kwargs=gen_kwargs,
                             apply_chat_template=apply_chat_template, fewshot_as_multiturn=fewshot_as_multiturn)


def task_manager(tasks: list[str], include_path: list[Path]):
    """A ``TaskManager`` over ``include_path``, and over lm-eval's built-in tasks only when some task needs them:
    indexing the built-in tasks costs ~15 s per evaluation."""
    from lm_eval.tasks import TaskManager

    paths = [str(p) for p in include_path]
    if paths:
        local = TaskManager(include_path=paths, include_defaults=False)
        if all(_resolves(local.task_index, t) for t in tasks):
            return local
    return TaskManager(include_path=paths or None)


def unknown_tasks(names: list[str], include_path: list[str], toy: bool) -> list[str]:
    """The names among ``names`` that no evaluation could resolve, found before any compute and cheaply: the toy
    world's tasks (when ``toy``: the run builds the world), the tasks in ``include_path`` (indexed by lm-eval, in
    milliseconds), then a whole-word search of the text of lm-eval's built-in task YAMLs (~0.3 s; indexing them
    takes ~10 s). lm-eval names its tasks, groups and tags by values written in those files, so a name found in
    none of them is unknown; a name that appears there only in passing gets through, and lm-eval stops on it later."""
    import importlib.util
    import re

    rest = [n for n in names if not (toy and n in TOY_TASKS)]
    if rest and include_path:
        from lm_eval.tasks import TaskManager

        local = TaskManager(include_path=[str(Path(p).expanduser()) for p in include_path], include_defaults=False)
        rest = [n for n in rest if n not in local.task_index]
    if not rest:
        return []
    spec = importlib.util.find_spec("lm_eval")
    root = Path(next(iter(spec.submodule_search_locations))) / "tasks"
    text = "\n".join(p.read_text(errors="replace") for p in root.rglob("*.yaml"))
    return [n for n in rest if not re.search(rf"(?<![\w-]){re.escape(n)}(?![\w-])", text)]


def _resolves(index: dict, name: str) -> bool:
    """Whether ``name`` and, for a group, every task it names are in ``index`` (lm-eval ``Entry`` objects)."""
    entry = index.get(name)
    if entry is None:
        return False
    members = (entry.cfg or {}).get("task") if entry.cfg and "group" in entry.cfg else None
    if isinstance(members, (str, list)):
        members = [members] if isinstance(members, str) else members
        return all(_resolves(index, m) for m in members if isinstance(m, str))
    return True


def shot_groups(tasks: list[str], fewshot: dict[str, int] | None, num_fewshot: int | None) -> dict:
    """``{shots: [tasks]}`` in first-appearance order; ``simple_evaluate`` takes one ``num_fewshot`` per call."""
    groups: dict[int | None, list[str]] = {}
    for task in tasks:
        groups.setdefault((fewshot or {}).get(task, num_fewshot), []).append(task)
    return groups


def evaluate_by_shots(lm, tasks: list[str], *, fewshot: dict[str, int] | None = None,
                      num_fewshot: int | None = None, task_manager=None, limit: int | None = None,
                      gen_kwargs: dict | None = None, apply_chat_template: bool = False,
                      fewshot_as_multiturn: bool = False) -> dict:
    """One ``simple_evaluate`` per distinct shot count, on the same model, with the per-task tables merged
    (``results``, ``groups``, ``group_subtasks``, ``configs``, ``versions``, ``n-shot``, ...)."""
    import lm_eval

    unknown = sorted(set(fewshot or {}) - set(tasks))
    if unknown:
        raise ValueError(f"eval.fewshot names tasks that are not evaluated: {unknown}")
    merged: dict = {}
    for shots, group in shot_groups(tasks, fewshot, num_fewshot).items():
        # log_samples: each document's scores, the per-example values behind the report's intervals
        # fewshot_as_multiturn passed always: simple_evaluate's own default (True) differs from evaluate's (False)
        out = lm_eval.simple_evaluate(model=lm, tasks=list(group), num_fewshot=shots, limit=limit,
                                      task_manager=task_manager, log_samples=True, bootstrap_iters=0,
                                      gen_kwargs=dict(gen_kwargs) if gen_kwargs else None,
                                      apply_chat_template=apply_chat_template,
                                      fewshot_as_multiturn=fewshot_as_multiturn)
        for key, value in out.items():
            if isinstance(value, dict) and isinstance(merged.get(key), dict):
                merged[key] = {**merged[key], **value}
            else:
                merged.setdefault(key, value)
    return merged


DEFAULT_METRIC = "acc,none"  # a multiple-choice task's accuracy, lm-eval's key for it


def metric_key(metrics: dict[str, str], task: str) -> str:
    """The lm-eval ``metric,filter`` key reported for ``task``: ``eval.metrics``'s, else :data:`DEFAULT_METRIC`."""
    return metrics.get(task, DEFAULT_METRIC)


def task_short_name(task: str) -> str:
    return task[len("toy_"):] if task.startswith("toy_") else task


def extract(results: dict, tasks: list[str], group: str, metrics: dict[str, str]) -> dict[str, float]:
    """``{group/task/metric: value}`` from lm-eval results; ``metrics`` maps a task to its ``metric,filter``
    key (:func:`metric_key`). A task that lm-eval did not report is an error, not a silent zero."""
    return {name: _value(results, task, metric_key(metrics, task))
            for task, name in zip(tasks, extract_keys(tasks, group, metrics))}


def _value(results: dict, task: str, key: str) -> float:
    try:
        return float(results["results"][task][key])
    except KeyError:
        have = sorted(results.get("results", {}).get(task, {}))
        raise KeyError(f"lm-eval reported no {key!r} for task {task!r}: it has {have}") from None


def summarize(results: dict, tasks: list[str], groups: dict[str, list[str]], metrics: dict[str, str],
              group_prefix: str = "pre") -> dict[str, float]:
    """:func:`columns` and their Avg. (``forgetting.evaluate.average``)."""

    out, top = columns(results, tasks, groups, metrics, group_prefix)
    return {**out, **average(out, {group_prefix: top})}


def columns(results: dict, tasks: list[str], groups: dict[str, list[str]], metrics: dict[str, str],
            group_prefix: str = "pre") -> tuple[dict[str, float], list[str]]:
    """The pre-existing-ability columns of the paper's tables (Appendix C), as fractions in [0, 1], and the keys of
    the top-level ones, which make its Avg.

    Per task, ``{prefix}/{task}/{metric}``, read from lm-eval's row for that name; an lm-eval *group* task
    (mmlu, bbh, agieval_en) has its own aggregate row there (size-weighted over its subtasks), so it is read
    the same way. Then each of ``groups`` is the unweighted mean of its member tasks (``pre/commonsense/acc``).
    The top-level columns are the groups and the tasks in no group (Commonsense, MMLU, BBH, AGIEval → the paper's
    "Avg.")."""
    out = extract(results, tasks, group_prefix, metrics)
    grouped = {t for members in groups.values() for t in members}
    top = [k for t, k in zip(tasks, extract_keys(tasks, group_prefix, metrics)) if t not in grouped]
    for name, members in groups.items():
        if not members:
            raise ValueError(f"eval.groups.{name} has no member tasks")
        keys = [metric_key(metrics, t) for t in members]
        names = {k.split(",")[0] for k in keys}
        key = f"{group_prefix}/{name}/{names.pop() if len(names) == 1 else 'mean'}"
        out[key] = sum(_value(results, t, k) for t, k in zip(members, keys)) / len(members)
        top.append(key)
    return out, top


def extract_keys(tasks: list[str], group: str, metrics: dict[str, str]) -> list[str]:
    return [f"{group}/{task_short_name(t)}/{metric_key(metrics, t).split(',')[0]}" for t in tasks]


def per_doc(results: dict, task: str, key: str) -> dict | None:
    """The per-document values behind ``results["results"][task][key]`` (``metric,filter``) as an examples record
    (``forgetting.evaluate.examples``), ids the documents' hashes; a group (mmlu) pools its subtasks' documents. None
    when lm-eval logged no samples for it, or when the pooled mean is not the reported value (a group averaged
    otherwise than over its documents)."""

    metric, _, filt = key.partition(",")
    samples, subtasks = results.get("samples") or {}, results.get("group_subtasks") or {}

    def leaves(name: str) -> list[str]:
        if name in samples:
            return [name]
        return [leaf for sub in subtasks.get(name, []) for leaf in leaves(sub)]

    docs = [e for t in leaves(task) for e in sorted(samples[t], key=lambda e: e["doc_id"])
            if e.get("filter") == filt and isinstance(e.get(metric), (int, float, bool))]
    if not docs:
        return None
    values = [float(e[metric]) for e in docs]
    try:
        reported = float(results["results"][task][key])
    except (KeyError, TypeError, ValueError):
        return None
    if abs(sum(values) / len(values) - reported) > 1e-6:
        return None
    return record(values, [e.get("doc_hash", e["doc_id"]) for e in docs])
