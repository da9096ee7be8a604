"""The OLMo suites' lm-eval tasks on local data (tests/fixtures/lm_eval_tasks/): the built-in tasks' prompts,
targets, filters and metrics under the built-in names, on a few made-up rows per task in each dataset's schema;
and how ``eval.include_path`` reaches lm-eval's TaskManager."""
from __future__ import annotations

from pathlib import Path

import pytest
from conftest import ROOT

TASKS_DIR = ROOT / "tests" / "fixtures" / "lm_eval_tasks"
# fixture YAML → the built-in YAML it mirrors (lm_eval/tasks/...)
MIRRORS = {
    "arc_easy.yaml": "arc/arc_easy.yaml", "arc_challenge.yaml": "arc/arc_challenge.yaml",
    "boolq.yaml": "super_glue/boolq/default.yaml", "hellaswag.yaml": "hellaswag/hellaswag.yaml",
    "openbookqa.yaml": "openbookqa/openbookqa.yaml", "piqa.yaml": "piqa/piqa.yaml",
    "social_iqa.yaml": "siqa/siqa.yaml", "winogrande.yaml": "winogrande/default.yaml",
    "mmlu_abstract_algebra.yaml": "mmlu/default/mmlu_abstract_algebra.yaml",
    "mmlu_anatomy.yaml": "mmlu/default/mmlu_anatomy.yaml",
    "bbh_cot_fewshot_boolean_expressions.yaml": "bbh/cot_fewshot/boolean_expressions.yaml",
    "bbh_cot_fewshot_navigate.yaml": "bbh/cot_fewshot/navigate.yaml",
    "agieval_aqua_rat.yaml": "agieval/aqua-rat.yaml", "agieval_lsat_ar.yaml": "agieval/lsat-ar.yaml",
    "gsm8k.yaml": "gsm8k/gsm8k.yaml", "gsm8k_cot.yaml": "gsm8k/gsm8k-cot.yaml",
    "nq_open.yaml": "nq_open/nq_open.yaml", "triviaqa.yaml": "triviaqa/default.yaml", "drop.yaml": "drop/default.yaml",
    "leaderboard_mmlu_pro.yaml": "leaderboard/mmlu_pro/mmlu_pro.yaml",
    "_mmlu.yaml": "mmlu/default/_mmlu.yaml", "_mmlu_stem.yaml": "mmlu/default/_mmlu_stem.yaml",
    "_bbh.yaml": "bbh/cot_fewshot/_bbh.yaml", "_agieval_en.yaml": "agieval/agieval_en.yaml",
}
DATA_KEYS = ("dataset_path", "dataset_name", "dataset_kwargs")


def _config(path: Path) -> dict:
    """A task YAML with its includes resolved and each ``!function`` as ``module.name``."""
    from lm_eval.tasks._yaml_loader import load_yaml

    cfg = load_yaml(path, resolve_func=True)
    return {k: f"{v.__module__.rsplit('.', 1)[-1]}.{v.__name__}" if callable(v) else v for k, v in cfg.items()}


@pytest.mark.parametrize("ours, builtin", MIRRORS.items(), ids=list(MIRRORS))
def test_fixture_task_is_the_builtin_task_on_local_data(ours, builtin):
    import lm_eval.tasks

    mine, real = _config(TASKS_DIR / ours), _config(Path(lm_eval.tasks.__file__).parent / builtin)
    assert mine.get("group", mine.get("task")) == real.get("group", real.get("task"))  # the same name
    if "group" in real:  # a small group: some of the real subtasks, aggregated the same way
        assert set(mine.pop("task")) <= set(real.pop("task"))
    if ours.startswith("bbh"):  # short made-up CoT exemplars in place of the real three
        assert len(mine["fewshot_config"].pop("samples")) == len(real["fewshot_config"].pop("samples")) == 3
    assert {k: v for k, v in mine.items() if k not in DATA_KEYS} == {k: v for k, v in real.items()
                                                                      if k not in DATA_KEYS}
    if "task" in mine:
        assert mine["dataset_path"] == "json" and mine.get("dataset_name") is None
        for split, file in mine["dataset_kwargs"]["data_files"].items():
            assert (ROOT / file).is_file(), (ours, split, file)


@pytest.mark.parametrize("suite", ["olmo_suite", "olmo2_suite", "recycle_suite"])
def test_suite_tasks_are_all_local_so_builtins_are_not_indexed(suite):
    from conftest import compose

    from forgetting.evaluate.lmeval import task_manager

    e = compose(f"eval={suite}").eval
    manager = task_manager(e.tasks + e.downstream, [TASKS_DIR])
    assert manager.task_index["arc_challenge"].yaml_path == TASKS_DIR / "arc_challenge.yaml"
    assert all(t in manager.task_index for t in e.tasks + e.downstream)
    assert "mmlu_astronomy" not in manager.task_index  # lm-eval's own tasks were not indexed (~15 s saved)


def test_include_path_task_overrides_the_builtin_of_the_same_name(monkeypatch):
    """lm-eval 0.4.13 indexes its built-in tasks first and include paths after, later winning: a task that needs
    a built-in one (mmlu_astronomy here) gets both, and our arc_easy and mmlu replace lm-eval's. (Only two of
    the built-in task folders are scanned, to save the ~15 s of indexing all of them.)"""
    import lm_eval.tasks
    from lm_eval.tasks._index import TaskIndex

    from forgetting.evaluate.lmeval import task_manager

    builtin, scan = Path(lm_eval.tasks.__file__).parent, TaskIndex._iter_yaml_files

    def some_builtins(root):
        roots = [builtin / "arc", builtin / "mmlu" / "default"] if Path(root) == builtin else [root]
        for r in roots:
            yield from scan(r)

    monkeypatch.setattr(TaskIndex, "_iter_yaml_files", staticmethod(some_builtins))
    manager = task_manager(["arc_easy", "mmlu_astronomy"], [TASKS_DIR])
    assert manager.task_index["arc_easy"].yaml_path == TASKS_DIR / "arc_easy.yaml"
    assert manager.task_index["mmlu"].yaml_path == TASKS_DIR / "_mmlu.yaml"
    assert manager.task_index["mmlu_astronomy"].yaml_path == builtin / "mmlu" / "default" / "mmlu_astronomy.yaml"
    assert manager.task_index["arc_challenge"].yaml_path == TASKS_DIR / "arc_challenge.yaml"


def test_a_missing_include_path_fails_at_composition(tmp_path):
    from conftest import compose

    from forgetting.errors import ConfigError

    with pytest.raises(ConfigError, match=r"^eval.include_path='/nonexistent/tasks' is invalid: expected an existing "
                                          r"directory of lm-eval task YAMLs$"):
        compose("eval.include_path=[/nonexistent/tasks]")
    assert compose(f"eval.include_path=[{TASKS_DIR},{tmp_path}]").eval.include_path == [str(TASKS_DIR), str(tmp_path)]


def test_the_task_files_are_part_of_the_evaluation_key(tmp_path):
    """An edited task YAML or data file is a new evaluation."""
    import shutil

    from conftest import compose

    from forgetting.pipeline import evaluate_spec
    from forgetting.store import Artifact, key_of

    def key(*overrides):
        return key_of("evaluate", evaluate_spec(compose(*overrides), Artifact("hub", "m", tmp_path), None))

    tasks = shutil.copytree(TASKS_DIR, tmp_path / "tasks")
    before = key(f"eval.include_path=[{tasks}]", "eval=olmo_suite")
    with open(tasks / "data" / "piqa.jsonl", "a") as f:
        f.write('{"goal": "To dry wet socks,", "sol1": "hang them up.", "sol2": "put them in soup.", "label": 0}\n')
    assert key(f"eval.include_path=[{tasks}]", "eval=olmo_suite") != before
    # an include path of tasks that are not evaluated is read by nothing
    assert key(f"eval.include_path=[{tasks}]", "eval.tasks=[]", "eval.downstream=[]") == \
        key("eval.tasks=[]", "eval.downstream=[]")

