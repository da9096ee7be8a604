"""Sweeps: a ratio grid generates once, a temperature grid once per temperature, labels name what a sweep changed,
and every experiment preset expands into configs that validate."""
from __future__ import annotations

import itertools
import json
import math
import shutil

import pytest
import yaml
from conftest import CONF, compose

from forgetting.pipeline import base_stage, label_of, train_stage, world_stage
from forgetting.store import Store

N_DOWN, CHUNK = 64, 16  # conf/world/micro.yaml n_down_train, conf/debug/micro.yaml generator.chunk
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))




def _train(store_root, *overrides) -> dict:
    c = compose("debug=micro", f"store_dir={store_root}", "trainer.max_steps=1", *overrides)
    store = Store(store_root)
    world = world_stage(c, store)
    art = train_stage(c, store, base_stage(c, store, world), world)
    return json.loads((art.path / "train_summary.json").read_text())


def _generate_log(store_root):
    return [e for e in Store(store_root).log() if e["stage"] == "generate"]


def test_ratio_grid_generates_the_largest_point_once_in_any_order(micro_store, tmp_path):
    made = {}
    for order in ([2.0, 1.0, 0.5, 0.1], [0.1, 0.5, 1.0, 2.0]):
        root = tmp_path / "-".join(map(str, order))
        shutil.copytree(micro_store, root)
        (root / "log.jsonl").unlink(missing_ok=True)
        for r in order:
            summary = _train(root, "method=cfs", f"method.ratio={r}")
            assert summary["rows"] == N_DOWN + round(N_DOWN * r)
        gen = _generate_log(root)
        misses = [e["key"] for e in gen if not e["hit"]]
        assert len(misses) == math.ceil(2.0 * N_DOWN / CHUNK) == 8  # the chunks of the largest point ...
        assert len(set(misses)) == len(misses)  # ... each made once
        assert len(gen) == sum(math.ceil(round(N_DOWN * r) / CHUNK) for r in order)  # the rest were read back
        made[tuple(order)] = {k: (root / "generate" / k / "samples.jsonl").read_text() for k in misses}
    largest_first, smallest_first = made.values()
    assert largest_first == smallest_first  # same chunks with the same samples, whatever the order


def test_temperature_grid_generates_once_per_temperature(store_copy):
    for t in (0.6, 1.2):
        _train(store_copy, "method=cfs", f"generator.temperature={t}")
    gen = _generate_log(store_copy)
    per_point = math.ceil(N_DOWN / CHUNK)
    assert [e["hit"] for e in gen] == [False] * 2 * per_point
    assert len({e["key"] for e in gen}) == 2 * per_point
    again = len(Store(store_copy).log())
    _train(store_copy, "method=cfs", "generator.temperature=0.6")  # a finished point samples nothing
    assert all(e["hit"] for e in Store(store_copy).log()[again:])
    # FT samples nothing, so the temperature grid shares one FT model
    for t in (0.6, 1.2):
        _train(store_copy, "method=ft", f"generator.temperature={t}")
    ft_train = [e for e in Store(store_copy).log()[again:] if e["stage"] == "train"][1:]
    assert [e["hit"] for e in ft_train] == [False, True]


@pytest.mark.parametrize("method, overrides, expected", [
    ("cfs", ["generator.temperature=0.6"], "CFS (temperature=0.6)"),
    ("ft", ["generator.temperature=0.6"], "FT"),
    ("base", ["generator.temperature=0.6"], "Base"),
    ("cfs", ["method.ratio=0.5"], "CFS (ratio=0.5)"),
    ("ft", ["method.ratio=0.5"], "FT"),
    ("wise_ft", ["method.alpha=0.2"], "Wise-FT (alpha=0.2)"),
    ("l2", ["method.l2_lambda=0.1"], "ℓ2 (l2_lambda=0.1)"),
    ("base", ["trainer.lr=0.1", "method.ratio=2"], "Base"),
])
def test_label_names_only_what_changes_the_run(method, overrides, expected):
    c = compose("debug=micro", f"method={method}", *overrides)
    assert label_of(c, [f"method={method}", *overrides]) == expected  # the sweep's own method= is not repeated


@pytest.mark.parametrize("method, name, expected", [
    ("base", None, "Base (dataset=train.jsonl, limit=640)"),   # no dataset.name: the file's name, not its path
    ("ft", "dates", "FT (dataset=dates, limit=640)"),
    ("cfs", "dates", "CFS (dataset=dates, limit=640)"),
])
def test_a_bring_your_own_label_names_the_dataset_once_not_its_files_and_fields(tmp_path, method, name, expected):
    """The label of a run on one's own files: the dataset's name and the knobs that size it, briefly; the absolute
    paths and field names stay in the overrides results.json keeps."""
    for split in ("train", "test"):
        (tmp_path / f"{split}.jsonl").write_text(json.dumps({"prompt": "What is 1 + 1?", "completion": "2"}) + "\n")
    overrides = [f"method={method}", "dataset=jsonl", f"dataset.path={tmp_path / 'train.jsonl'}",
                 "dataset.query_field=prompt", "dataset.response_field=completion",
                 f"dataset.test_path={tmp_path / 'test.jsonl'}", "dataset.limit=640"]
    overrides += [f"dataset.name={name}"] if name else []
    c = compose("debug=micro", *overrides)
    label = label_of(c, overrides)
    assert label == expected
    assert str(tmp_path) not in label and "field" not in label


def test_label_override_wins():
    c = compose("debug=micro", "method=cfs", "generator.temperature=0.6", "label=mine")
    assert label_of(c, ["method=cfs", "generator.temperature=0.6", "label=mine"]) == "mine"


@pytest.mark.parametrize("method, override, expected", [
    ("cs", "generator.temperature=0.6", "CS"),
    ("cfs", "generator.contextual_temperature=0.9", "CFS"),
    ("replay", "generator.temperature=0.6", "P"),
])
def test_label_ignores_generator_knobs_the_method_does_not_use(method, override, expected):
    c = compose("debug=micro", f"method={method}", override)
    assert label_of(c, [f"method={method}", override]) == expected


def test_cs_temperature_grid_shares_one_cs_model(store_copy):
    """generator.temperature does not change CS's samples (they are read back), so it should not retrain CS."""
    for t in (0.6, 1.2):
        _train(store_copy, "method=cs", f"generator.temperature={t}")
    log = Store(store_copy).log()
    assert [e["hit"] for e in log if e["stage"] == "generate"] == [False] * 4 + [True] * 4  # samples shared
    assert [e["hit"] for e in log if e["stage"] == "train"] == [False, True]


def _axes(name: str) -> dict[str, list[str]]:
    preset = yaml.safe_load((CONF / "experiment" / f"{name}.yaml").read_text())
    params = preset.get("hydra", {}).get("sweeper", {}).get("params", {})  # a single-run preset has none
    return {key: [v.strip() for v in str(values).split(",")] for key, values in params.items()}


def _product(axes: dict[str, list[str]]) -> list[list[str]]:
    return [list(combo) for combo in itertools.product(*([f"{k}={v}" for v in vs] for k, vs in axes.items()))]


def _sweep(name: str) -> list[list[str]]:
    return _product(_axes(name))


def _smoke(name: str) -> list[list[str]]:
    """The sweep a smoke run needs: every value of an axis that changes what runs (pretrain, version, method…), the
    ends of a numeric grid, one seed (seeds key their bases apart: tests/test_keys.py). sam_frontier: 8 of 72 runs."""
    axes = _axes(name)
    for key, values in axes.items():
        if key == "seed":
            axes[key] = values[:1]
        elif len(values) > 2 and all(_is_number(v) for v in values):
            axes[key] = [values[0], values[-1]]
    return _product(axes)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _value(c, dotted: str):
    obj = c
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def test_experiment_presets_are_all_found():
    assert {"main", "table2", "table3", "table4_ratio", "table4_temperature", "table8", "table10",
            "table11"} <= set(EXPERIMENTS)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_preset_sweep_expands_to_valid_configs(name):
    combos = _sweep(name)
    assert combos
    for combo in combos:
        c = compose("debug=micro", f"+experiment={name}", *combo)
        assert c.world.name == "micro"  # debug=micro still applies under the preset
        for override in combo:
            key, value = override.split("=", 1)
            if key == "method":
                assert c.method.name == value
                continue
            if key in ("pretrain", "version"):  # option groups of model.pretrain and model (conf/<group>/)
                assert value in {p.stem for p in (CONF / key).glob("*.yaml")}
                continue
            got = _value(c, key)
            if isinstance(got, (int, float)):
                assert got == pytest.approx(float(value)), override
            else:
                assert str(got) == value, override


TOY_PRESETS = [n for n in EXPERIMENTS if compose("debug=micro", f"+experiment={n}").model.source == "toy"]


@pytest.mark.parametrize("name", TOY_PRESETS)
def test_every_toy_preset_runs_on_the_micro_world(name, store_copy, tmp_path):
    """DESIGN convention 9: each preset's sweep is smoke-run (micro world, few steps; every axis that changes what
    runs, the ends of each numeric grid) and the report reads it; every point of it composes (the test above)."""
    from forgetting.pipeline import run
    from forgetting.report import write_report

    labels = set()
    for i, combo in enumerate(_smoke(name)):
        c = compose("debug=micro", f"store_dir={store_copy}", f"+experiment={name}", *combo)
        result = run(c, tmp_path / "runs" / str(i), overrides=combo)
        assert result["metrics"]["pre/avg"] >= 0 and "down/arith/exact_match" in result["metrics"]
        labels.add(result["label"])
    markdown = write_report([tmp_path / "runs"], tmp_path)
    assert all(f"| {label} |" in markdown for label in labels)
