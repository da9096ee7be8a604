"""Context-free samples from a declared mixture of start tokens (``method.starts``): proportions held by every
prefix, each sample's start recorded, the keys, and the held-out KL samples following the same mixture."""
from __future__ import annotations

from collections import Counter

import pytest
from conftest import compose

from forgetting.errors import ConfigError
from forgetting.generate.sources import start_sequence
from forgetting.pipeline import base_stage, generate_stage, plan, world_stage
from forgetting.runtime import tokenizer_of
from forgetting.store import Store

MIX = "method.starts=[{weight: 2}, {token: '</s>', weight: 1}]"


def test_start_sequence_holds_the_proportions_in_every_prefix_and_chunks_join():
    starts = [(1, 2.0), (7, 1.0), (9, 1.0)]
    whole = start_sequence(starts, 0, 400)
    for n in range(1, 401):
        counts = Counter(whole[:n])
        for token, weight in starts:
            assert abs(counts[token] - n * weight / 4) <= 1.0
    # chunk i of size k is rows i*k .. (i+1)*k - 1 of the same sequence
    assert start_sequence(starts, 0, 64) + start_sequence(starts, 64, 64) == whole[:128]
    assert start_sequence([(5, 1.0)], 3, 4) == [5, 5, 5, 5]


def test_cfs_rows_start_from_the_mixture_and_record_their_start(store_copy):
    c = compose("debug=micro", f"store_dir={store_copy}", "method=cfs", MIX)
    store = Store(store_copy)
    world = world_stage(c, store)
    base = base_stage(c, store, world)
    tok = tokenizer_of(c, base)
    rows = generate_stage(c, store, base, world, [], 30)
    assert len(rows) == 30
    assert all(r["ids"][0] == r["start"] for r in rows)
    counts = Counter(r["start"] for r in rows)
    assert counts == {tok.bos_token_id: 20, tok.eos_token_id: 10}


def test_starts_change_the_cfs_key_and_the_default_key_is_unchanged(tmp_path):
    default = plan(compose("debug=micro", "method=cfs"))
    assert plan(compose("debug=micro", "method=cfs", "method.starts=[]")) == default
    mixed = plan(compose("debug=micro", "method=cfs", MIX))
    assert mixed["train"] != default["train"]
    # FT samples nothing: its model does not depend on the starts
    assert plan(compose("debug=micro", "method=ft", MIX))["train"] == plan(compose("debug=micro", "method=ft"))["train"]
    # the KL's held-out samples follow method.starts unless eval.base_samples_starts declares its own
    kl = ("eval.base_samples=8",)
    assert plan(compose("debug=micro", "method=ft", MIX, *kl))["evaluate"] != \
        plan(compose("debug=micro", "method=ft", *kl))["evaluate"]
    assert plan(compose("debug=micro", "method=ft", MIX, *kl, "eval.base_samples_starts=[{}]"))["evaluate"] == \
        plan(compose("debug=micro", "method=ft", *kl, "eval.base_samples_starts=[{}]"))["evaluate"]


@pytest.mark.parametrize("bad,match", [
    ("method.starts=[{weight: 0}]", "start.weight=0"),
    ("method.starts=[{weight: inf}]", "start.weight=inf"),
    ("method.starts=[{token: a, id: 3}]", "start.token='a'"),
])
def test_bad_starts_are_refused_in_one_line(bad, match):
    with pytest.raises(ConfigError, match=match):
        compose("debug=micro", "method=cfs", bad)
