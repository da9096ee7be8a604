"""Forgetting measures without an lm-eval task: held-out loss on offline real text, and KL(base ‖ model) on the
base model's own held-out context-free samples."""
from __future__ import annotations

import pytest
from conftest import compose

from forgetting.config import ConfigError
from forgetting.data.offline import corpus
from forgetting.pipeline import base_stage, evaluate_stage, train_stage, world_stage
from forgetting.store import Store


def test_offline_corpora_are_deterministic_real_python_and_prose():
    code, prose = corpus("stdlib_code", 20), corpus("stdlib_prose", 20)
    assert code == corpus("stdlib_code", 20) and code != corpus("stdlib_code", 20, seed=1)
    assert len(code) == len(prose) == 20 and len(set(code)) == 20
    assert sum(("def " in d or "import " in d or "return" in d) for d in code) >= 15
    # English sentences (some docstrings carry a usage example too)
    assert sum(" the " in d.lower() or " a " in d.lower() for d in prose) >= 15
    with pytest.raises(ConfigError, match="eval.corpora='nope'"):
        compose("eval.corpora=[nope]")


def test_kl_to_the_base_is_zero_for_the_base_and_positive_after_fine_tuning(store_copy):
    overrides = ("debug=micro", f"store_dir={store_copy}", "eval.tasks=[]", "eval.downstream=[]",
                 "eval.heldout_loss=false", "eval.base_samples=12", "eval.corpora=[stdlib_prose]",
                 "eval.corpus_docs=4", "eval.corpus_max_len=64")
    c = compose(*overrides, "method=ft")
    store = Store(store_copy)
    world = world_stage(c, store)
    base = base_stage(c, store, world)
    tuned = train_stage(c, store, base, world)
    on_base = evaluate_stage(c, store, base, world, base)
    on_tuned = evaluate_stage(c, store, tuned, world, base)
    assert on_base["pre/base_samples/kl"] == 0.0 and on_base["pre/base_samples/loss"] > 0
    assert on_tuned["pre/base_samples/kl"] > 0.01  # FT moves the model away from its own samples
    assert on_tuned["pre/stdlib_prose/loss"] != on_base["pre/stdlib_prose/loss"]
    # the same held-out samples for every run: the base's chunks were generated once, at the fixed seed
    generated = [e for e in store.log() if e["stage"] == "generate"]
    assert [e["hit"] for e in generated] == [False, True]  # debug=micro: 12 samples fit one chunk of 16
