"""The OLMo lm-eval suite (paper Appendix C): metrics read from lm-eval 0.4.13's results, the commonsense mean,
the Avg. column, and per-task few-shot counts; no model is run."""
from __future__ import annotations

import copy

import numpy as np
import pytest

from forgetting.evaluate.lmeval import evaluate_by_shots, run_lmeval, shot_groups, summarize

COMMONSENSE = ["arc_challenge", "arc_easy", "boolq", "hellaswag", "openbookqa", "piqa", "social_iqa", "winogrande"]
TASKS = COMMONSENSE + ["mmlu", "bbh", "agieval_en"]
METRICS = {"bbh": "exact_match,get-answer", "gsm8k": "exact_match,strict-match"}
ACC = dict(zip(COMMONSENSE, [0.30, 0.60, 0.62, 0.47, 0.36, 0.74, 0.42, 0.59]))


def _task(name: str, metrics: dict[str, float], n: int = 100, alias: str | None = None) -> dict:
    """A leaf row as ``_collect_results`` writes it; bootstrap_iters=0 makes every stderr "N/A"."""
    row = {"name": name, "alias": alias or name, "sample_len": n}
    for key, value in metrics.items():
        metric, filt = key.split(",")
        row[key] = np.float64(value)
        row[f"{metric}_stderr,{filt}"] = "N/A"
    return row


def _group(name: str, key: str, rows: list[dict], alias: str | None = None) -> dict:
    """A group row as ``Group.aggregate`` writes it: the size-weighted mean of its leaf tasks."""
    n = sum(r["sample_len"] for r in rows)
    metric, filt = key.split(",")
    return {"alias": alias or name, "name": name, "sample_len": n,
            key: sum(r[key] * r["sample_len"] for r in rows) / n, f"{metric}_stderr,{filt}": "N/A",
            "sample_count": {key: n}}


def lm_eval_results() -> dict:
    """``simple_evaluate(tasks=[...commonsense, mmlu, bbh, agieval_en, gsm8k], bootstrap_iters=0)`` in 0.4.13's
    shape (lm_eval/evaluator_utils.py ``EvalAcc._to_eval_results``), with a few subtasks per group. Group rows
    appear both in ``results`` and in ``groups``; ``group_subtasks`` lists groups only."""
    leaves = {t: _task(t, {"acc,none": ACC[t], **({} if t == "boolq" else {"acc_norm,none": ACC[t] + 0.05})})
              for t in COMMONSENSE}
    mmlu = [_task("mmlu_abstract_algebra", {"acc,none": 0.22}, 100, "abstract_algebra"),
            _task("mmlu_anatomy", {"acc,none": 0.26}, 135, "anatomy"),
            _task("mmlu_professional_law", {"acc,none": 0.24}, 1534, "professional_law")]
    bbh = [_task("bbh_cot_fewshot_boolean_expressions", {"exact_match,get-answer": 0.52}, 250),
           _task("bbh_cot_fewshot_date_understanding", {"exact_match,get-answer": 0.10}, 250)]
    agieval = [_task("agieval_aqua_rat", {"acc,none": 0.20, "acc_norm,none": 0.21}, 254),
               _task("agieval_lsat_ar", {"acc,none": 0.17, "acc_norm,none": 0.18}, 230)]
    gsm8k = _task("gsm8k", {"exact_match,strict-match": 0.031, "exact_match,flexible-extract": 0.045}, 1319)
    groups = {
        "mmlu": _group("mmlu", "acc,none", mmlu),
        "mmlu_stem": _group("mmlu_stem", "acc,none", mmlu[:2], "stem"),
        "mmlu_humanities": _group("mmlu_humanities", "acc,none", mmlu[2:], "humanities"),
        "bbh": _group("bbh", "exact_match,get-answer", bbh),
        "agieval_en": _group("agieval_en", "acc,none", agieval),
    }
    leaf_rows = {**leaves, **{r["name"]: r for r in mmlu + bbh + agieval + [gsm8k]}}
    shots = {**{t: 0 for t in leaf_rows}, **{r["name"]: 3 for r in bbh}, "gsm8k": 5, "bbh": 3, "agieval_en": 0,
             "mmlu_stem": 0, "mmlu_humanities": 0}
    return {
        "results": {**leaf_rows, **copy.deepcopy(groups)},
        "groups": groups,
        "group_subtasks": {"mmlu": ["mmlu_stem", "mmlu_humanities"],
                           "mmlu_stem": ["mmlu_abstract_algebra", "mmlu_anatomy"],
                           "mmlu_humanities": ["mmlu_professional_law"],
                           "bbh": [r["name"] for r in bbh],
                           "agieval_en": [r["name"] for r in agieval]},
        "configs": {t: {"task": t, "num_fewshot": shots[t]} for t in leaf_rows},
        "versions": {**{t: 1.0 for t in leaf_rows}, "mmlu": "2", "bbh": "3.0", "agieval_en": "0.0"},
        "n-shot": dict(sorted(shots.items())),
        "higher_is_better": {t: {"acc": True} for t in leaf_rows},
        "n-samples": {t: {"original": r["sample_len"], "effective": r["sample_len"]} for t, r in leaf_rows.items()},
        "config": {"model": "HFLM", "limit": None, "bootstrap_iters": 0},
        "git_hash": None,
        "date": 1.7e9,
    }


def test_suite_columns_follow_the_paper():
    res = lm_eval_results()
    out = summarize(res, TASKS, {"commonsense": COMMONSENSE}, METRICS)
    assert all(type(v) is float for v in out.values())  # numpy floats converted
    for t in COMMONSENSE:
        assert out[f"pre/{t}/acc"] == pytest.approx(ACC[t])
    # lm-eval's own group rows, size-weighted over subtasks: (0.22*100 + 0.26*135 + 0.24*1534) / 1769
    mmlu = (0.22 * 100 + 0.26 * 135 + 0.24 * 1534) / 1769
    assert out["pre/mmlu/acc"] == pytest.approx(mmlu) and mmlu != pytest.approx((0.22 + 0.26 + 0.24) / 3)
    assert out["pre/bbh/exact_match"] == pytest.approx(0.31)
    assert out["pre/agieval_en/acc"] == pytest.approx((0.20 * 254 + 0.17 * 230) / 484)
    commonsense = sum(ACC.values()) / 8
    assert out["pre/commonsense/acc"] == pytest.approx(commonsense)
    avg = (commonsense + mmlu + 0.31 + (0.20 * 254 + 0.17 * 230) / 484) / 4  # the paper's Avg. column
    assert out["pre/avg"] == pytest.approx(avg)
    assert set(out) == {f"pre/{t}/acc" for t in COMMONSENSE} | {
        "pre/mmlu/acc", "pre/bbh/exact_match", "pre/agieval_en/acc", "pre/commonsense/acc", "pre/avg"}
    down = summarize(res, ["gsm8k"], {}, METRICS, group_prefix="down")
    assert down == {"down/gsm8k/exact_match": pytest.approx(0.031), "down/avg": pytest.approx(0.031)}


def test_missing_metric_is_a_clear_error():
    res = lm_eval_results()
    with pytest.raises(KeyError, match=r"no 'exact_match,none' for task 'bbh': it has \[.*'exact_match,get-answer'"):
        summarize(res, TASKS, {}, {"bbh": "exact_match,none"})
    del res["results"]["piqa"]
    with pytest.raises(KeyError, match=r"no 'acc,none' for task 'piqa': it has \[\]"):
        summarize(res, TASKS, {"commonsense": COMMONSENSE}, METRICS)


def test_fixture_groups_match_lm_eval_own_aggregation():
    """The hand-written group rows are what lm-eval 0.4.13 computes from the same leaf rows."""
    from types import SimpleNamespace

    from lm_eval.api.group import Group
    from lm_eval.api.task import ConfigurableTask
    from lm_eval.config.group import AggMetricConfig
    from lm_eval.evaluator_utils import EvalAcc, aggregate_groups

    res = lm_eval_results()
    subtasks, made = res["group_subtasks"], {}
    aggregate = {"bbh": AggMetricConfig(metric="exact_match", filter_list="get-answer")}

    def node(name):
        if name not in subtasks:
            task = ConfigurableTask.__new__(ConfigurableTask)
            task._config = SimpleNamespace(task=name)
            return task
        if name not in made:
            made[name] = Group(name=name, alias=res["groups"][name]["alias"],
                               aggregate_metric_list=[aggregate.get(name, AggMetricConfig(metric="acc"))])
            for child in subtasks[name]:
                made[name].add(node(child))
        return made[name]

    for name in subtasks:
        node(name)
    acc = EvalAcc(metrics={k: dict(v) for k, v in res["results"].items() if k not in subtasks}, groups=made)
    aggregate_groups(acc)
    for name, row in res["groups"].items():
        got = acc.metrics[name]
        assert set(got) == set(row)
        for key, value in row.items():
            assert got[key] == (pytest.approx(value) if isinstance(value, float) else value), (name, key)


def test_fewshot_groups_tasks_by_shot_count():
    assert shot_groups(["arc_easy", "gsm8k", "mmlu", "bbh"], {"gsm8k": 5}, None) == {
        None: ["arc_easy", "mmlu", "bbh"], 5: ["gsm8k"]}
    assert shot_groups(["a", "b", "c"], {"b": 0, "c": 5}, 2) == {2: ["a"], 0: ["b"], 5: ["c"]}
    assert shot_groups(["a", "b"], {}, None) == {None: ["a", "b"]}


def test_run_lmeval_calls_simple_evaluate_once_per_shot_count_and_merges(monkeypatch):
    import lm_eval
    import lm_eval.models.huggingface
    import lm_eval.tasks

    full, calls, built = lm_eval_results(), [], []

    def fake_simple_evaluate(*, model, tasks, num_fewshot, limit, task_manager, **kw):
        """What lm-eval returns for just ``tasks``: every per-name table cut to them and their subtasks."""
        calls.append({"model": model, "tasks": list(tasks), "num_fewshot": num_fewshot,
                      "manager": task_manager, "limit": limit, **kw})
        keep, todo = set(), list(tasks)
        while todo:
            name = todo.pop()
            keep.add(name)
            todo += full["group_subtasks"].get(name, [])
        per_name = ("results", "groups", "group_subtasks", "configs", "versions", "n-shot", "higher_is_better",
                    "n-samples")
        return {k: ({n: v for n, v in full[k].items() if n in keep} if k in per_name else full[k]) for k in full}

    class FakeHFLM:
        def __init__(self, **kw):
            built.append(("lm", kw))

    class FakeManager:
        def __init__(self, **kw):
            built.append(("manager", kw))

    monkeypatch.setattr(lm_eval, "simple_evaluate", fake_simple_evaluate)
    monkeypatch.setattr(lm_eval.models.huggingface, "HFLM", FakeHFLM)
    monkeypatch.setattr(lm_eval.tasks, "TaskManager", FakeManager)

    res = run_lmeval(object(), "tok", TASKS + ["gsm8k"], fewshot={"gsm8k": 5}, limit=7, batch_size=4)
    assert [(c["tasks"], c["num_fewshot"]) for c in calls] == [(TASKS, None), (["gsm8k"], 5)]
    assert [b[0] for b in built] == ["lm", "manager"]  # one model and one task index for every call
    assert calls[0]["model"] is calls[1]["model"] and calls[0]["manager"] is calls[1]["manager"]
    # log_samples: the per-document values behind the report's intervals; no chat template unless asked for, and
    # fewshot_as_multiturn passed explicitly (simple_evaluate's own default is True)
    assert all(c["limit"] == 7 and c["bootstrap_iters"] == 0 and c["log_samples"] is True for c in calls)
    assert all(c["apply_chat_template"] is False and c["fewshot_as_multiturn"] is False for c in calls)
    calls.clear()
    run_lmeval(object(), "tok", ["gsm8k"], apply_chat_template=True, fewshot_as_multiturn=True)
    assert [(c["apply_chat_template"], c["fewshot_as_multiturn"]) for c in calls] == [(True, True)]
    assert set(res["results"]) == set(full["results"]) and res["n-shot"]["gsm8k"] == 5
    assert set(res["groups"]) == set(full["groups"]) and res["group_subtasks"] == full["group_subtasks"]
    out = summarize(res, TASKS, {"commonsense": COMMONSENSE}, METRICS)
    assert out == summarize(full, TASKS, {"commonsense": COMMONSENSE}, METRICS)

    with pytest.raises(ValueError, match=r"eval.fewshot names tasks that are not evaluated: \['gsm8k'\]"):
        evaluate_by_shots(object(), ["arc_easy"], fewshot={"gsm8k": 5})
