"""Held-out validation rows of a real fine-tuning dataset, scored by their answer-token loss (paper 003's learning axis,
``down/<name>/val_loss``): a file (``dataset.validation_path``), a hub split (``validation_split``) or the last
``validation_rows`` rows of the training source, which training then leaves out.

    pytest tests/data/test_validation_rows.py
"""
from __future__ import annotations

import json

import pytest
from conftest import compose

from forgetting.data.formats import load_rows
from forgetting.errors import ConfigError
from forgetting.pipeline import base_stage, evaluate_stage, plan, train_stage, world_stage
from forgetting.store import Store

# invented objects and their colours (nothing the micro base has seen), asked four ways
COLOURS = {"zorp": "red", "blick": "blue", "quam": "green", "fent": "gold", "dravel": "red", "smoo": "blue"}
ASKS = ("What colour is the", "Tell me the colour of the", "Which colour has the", "Say the colour of the")


@pytest.fixture
def rows_file(tmp_path):
    rows = [{"query": f"{ask} {thing}?", "response": f"The answer is: {colour}"}
            for ask in ASKS for thing, colour in COLOURS.items()]  # 24 rows; the last 6 ask "Say the colour of the"
    path = tmp_path / "colours.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path, rows


def _data(path, *more):
    return ("debug=micro", "dataset=jsonl", "dataset.name=colours", f"dataset.path={path}", *more)


def test_validation_rows_are_the_sources_last_rows_and_leave_training(rows_file):
    path, rows = rows_file
    c = compose(*_data(path, "dataset.validation_rows=6"))
    assert load_rows(c.dataset, validation=True) == rows[-6:]
    assert load_rows(c.dataset) == rows[:-6]
    c.dataset.limit = 4  # a limit takes from the training rows; the held-out rows stay the same
    assert load_rows(c.dataset) == rows[:4] and load_rows(c.dataset, validation=True) == rows[-6:]
    with pytest.raises(ConfigError, match=r"^dataset.validation_rows=24 is invalid: expected fewer than the 24 rows"):
        load_rows(compose(*_data(path, "dataset.validation_rows=24")).dataset)


def test_a_validation_file_changes_the_evaluation_not_the_training(rows_file, tmp_path):
    path, rows = rows_file
    held = tmp_path / "held.jsonl"
    held.write_text("".join(json.dumps(r) + "\n" for r in rows[:3]))
    none = plan(compose(*_data(path), "eval.downstream_loss=true"))
    by_file = plan(compose(*_data(path, f"dataset.validation_path={held}"), "eval.downstream_loss=true"))
    assert by_file["train"] == none["train"] and by_file["evaluate"] != none["evaluate"]
    by_rows = plan(compose(*_data(path, "dataset.validation_rows=6"), "eval.downstream_loss=true"))
    assert by_rows["train"] != none["train"]  # six rows fewer to train on
    assert plan(compose(*_data(path, "dataset.validation_rows=0")))["train"] == none["train"]  # 0: as before it existed


@pytest.mark.parametrize("overrides, message", [
    (("dataset.validation_rows=2",), r"dataset.validation_rows=2 is invalid: expected null / 0 with dataset.source="),
    (("dataset=jsonl", "dataset.path=tests/fixtures/metamathqa.jsonl", "dataset.validation_rows=1",
      "dataset.validation_path=tests/fixtures/metamathqa.jsonl"),
     r"dataset.validation_rows=1 is invalid: expected null / 0 when dataset.validation_path is set"),
    (("dataset=jsonl", "dataset.path=tests/fixtures/metamathqa.jsonl", "dataset.validation_split=validation"),
     r"dataset.validation_split='validation' is invalid: expected null unless dataset.path is a hub dataset"),
    (("dataset.validation_rows=-1",), r"dataset.validation_rows=-1 is invalid: expected an integer >= 0"),
])
def test_bad_validation_settings_fail_at_composition(overrides, message):
    with pytest.raises(ConfigError, match=message):
        compose(*overrides)


def test_fine_tuning_lowers_the_held_out_rows_loss(store_copy, rows_file):
    """The micro base fine-tuned on 18 colour rows: its loss on the 6 held-out rows (another phrasing, the same
    colours) falls; the training summary counts the 18 rows, not 24."""
    path, _ = rows_file
    c = compose(*_data(path, "dataset.validation_rows=6"), f"store_dir={store_copy}", "eval.downstream_loss=true",
                "eval.tasks=[]", "eval.downstream=[]", "eval.heldout_loss=false", "method=ft")
    store = Store(store_copy)
    world = world_stage(c, store)
    base = base_stage(c, store, world)
    tuned = train_stage(c, store, base, world)
    assert json.loads((tuned.path / "train_summary.json").read_text())["rows"] == 18
    before, after = (evaluate_stage(c, store, m, world, base) for m in (base, tuned))
    assert set(before) == {"down/colours/val_loss"}
    assert after["down/colours/val_loss"] < before["down/colours/val_loss"]
