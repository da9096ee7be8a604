"""Forgetting measures without an lm-eval task: held-out loss on offline real text, and KL(base ‖ model) on the
base model's own held-out context-free samples."""
from __future__ import annotations

import json

import pytest
from conftest import compose

from forgetting.data.offline import corpus
from forgetting.errors import ConfigError
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


HELDOUT = "tests/fixtures/dclm_heldout.jsonl"  # a held-out web-text sample in DCLM's schema (made up)


def test_a_held_out_corpus_file_is_scored_by_its_stem_and_keyed_by_its_content(store_copy, tmp_path):
    """``eval.corpora`` takes a .jsonl of held-out documents (a Dolma / DCLM sample) beside the offline corpora: its
    first ``corpus_docs`` documents, ``pre/<stem>/loss``; an edited file is a new evaluation."""
    import shutil

    from forgetting.pipeline import plan

    texts = [json.loads(line)["text"] for line in open(HELDOUT)]
    assert corpus(HELDOUT, 4) == texts[:4] and corpus(HELDOUT, 100) == texts
    mine = tmp_path / "dclm_heldout.jsonl"
    shutil.copy(HELDOUT, mine)
    overrides = ("debug=micro", f"store_dir={store_copy}", "eval.tasks=[]", "eval.downstream=[]",
                 "eval.heldout_loss=false", f"eval.corpora=[stdlib_prose,{mine}]", "eval.corpus_docs=4",
                 "eval.corpus_max_len=64", "method=base")
    c = compose(*overrides)
    store = Store(store_copy)
    world = world_stage(c, store)
    base = base_stage(c, store, world)
    metrics = evaluate_stage(c, store, base, world, base)
    assert set(metrics) == {"pre/stdlib_prose/loss", "pre/dclm_heldout/loss"} and metrics["pre/dclm_heldout/loss"] > 0
    before = plan(c)["evaluate"]
    with open(mine, "a") as f:
        f.write(json.dumps({"text": "One more held-out page."}) + "\n")
    assert plan(compose(*overrides))["evaluate"] != before
    # the stdlib corpora alone keep the key they had before files could be named
    assert "sha256" not in json.dumps(plan(compose(*overrides[:5], "eval.corpora=[stdlib_prose]")))


def test_a_held_out_corpus_must_exist_parse_and_not_be_the_mid_training_corpus(tmp_path):
    from forgetting.checks import check_inputs

    with pytest.raises(ConfigError, match=r"eval.corpora='web.txt' is invalid: expected one of \['stdlib_code', "
                                          r"'stdlib_prose'\] or a .jsonl file"):
        compose("eval.corpora=[web.txt]")
    with pytest.raises(ConfigError, match=r"eval.corpora=\['a/held.jsonl', 'b/held.jsonl'\] is invalid: expected "
                                          r"corpora of distinct names"):
        compose("eval.corpora=[a/held.jsonl,b/held.jsonl]")
    store = f"store_dir={tmp_path / 'store'}"
    with pytest.raises(ConfigError, match=r"eval.corpora='missing.jsonl' is invalid: expected an existing .jsonl"):
        check_inputs(compose("eval.corpora=[missing.jsonl]", store))
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"content": "no text field"}) + "\n")
    with pytest.raises(ConfigError, match=r"expected a .jsonl whose rows are \{\"text\": <non-empty string>\}"):
        check_inputs(compose(f"eval.corpora=[{bad}]", store))
    with pytest.raises(ConfigError, match=r"expected held-out documents: not model.midtrain.corpus"):
        check_inputs(compose(f"eval.corpora=[{HELDOUT}]", "model.midtrain.steps=2", f"model.midtrain.corpus={HELDOUT}",
                             store))
    check_inputs(compose(f"eval.corpora=[{HELDOUT}]", "model.midtrain.steps=2",
                         "model.midtrain.corpus=tests/fixtures/dolma.jsonl", store))
