"""Context-free generation: BOS-only prompts, seeding, and chunked prefix reuse."""
from __future__ import annotations

from conftest import compose

from forgetting.generate.sources import context_free
from forgetting.pipeline import base_stage, world_stage
from forgetting.runtime import load
from forgetting.store import Store


def _setup(store_root, *overrides):
    c = compose("debug=micro", f"store_dir={store_root}", *overrides)
    store = Store(store_root)
    base = base_stage(c, store, world_stage(c, store))
    model, tok = load(c, base)
    return c, store, base, model, tok


def test_bos_only_prompts_hold_exactly_one_bos(store_copy):
    c, store, base, model, tok = _setup(store_copy)
    seen = []
    original = model.generate

    def spy(*args, **kwargs):
        seen.append(kwargs["input_ids"].clone())
        return original(*args, **kwargs)

    model.generate = spy
    rows = context_free(store, base, c.generator, 20, bos_id=tok.bos_token_id, load=lambda: (model, tok))
    assert seen, "the backend never called generate"
    for ids in seen:
        assert ids.shape[1] == 1 and (ids == tok.bos_token_id).all()
    assert len(rows) == 20
    for r in rows:
        assert r["ids"][0] == tok.bos_token_id  # the stored sample is the prompt (one BOS) + completion
        assert tok.pad_token_id not in r["ids"]


def test_same_seed_same_samples_other_seed_other_samples(store_copy, tmp_path):
    c, store, base, model, tok = _setup(store_copy)
    a = context_free(store, base, c.generator, 20, bos_id=tok.bos_token_id, load=lambda: (model, tok))
    fresh = Store(tmp_path / "other")  # a second store: the samples are recomputed, not read back
    b = context_free(fresh, base, c.generator, 20, bos_id=tok.bos_token_id, load=lambda: (model, tok))
    assert a == b
    c2 = compose("debug=micro", "generator.seed=1")
    d = context_free(fresh, base, c2.generator, 20, bos_id=tok.bos_token_id, load=lambda: (model, tok))
    assert d != a


def test_smaller_request_is_a_prefix_and_reuses_chunks(store_copy):
    c, store, base, model, tok = _setup(store_copy)
    calls = []
    big = context_free(store, base, c.generator, 40, bos_id=tok.bos_token_id,
                       load=lambda: calls.append(1) or (model, tok))
    assert calls == [1]
    small = context_free(store, base, c.generator, 10, bos_id=tok.bos_token_id,
                         load=lambda: calls.append(1) or (model, tok))
    assert small == big[:10] and calls == [1]  # the model was not even loaded again
    gen = [e for e in store.log() if e["stage"] == "generate"]
    assert sum(not e["hit"] for e in gen) == 3  # ceil(40 / chunk 16) chunks made once
