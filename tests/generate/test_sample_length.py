"""How long model samples are: by default as long as a training sequence (``generator.max_new_tokens: null`` resolves
to ``trainer.max_seq_len - 1``, the BOS-only prompt's budget), unless set.

    pytest tests/generate/test_sample_length.py
"""
from __future__ import annotations

import pytest
from conftest import compose

from forgetting.data.datasets import load_downstream
from forgetting.data.encode import encode_ids
from forgetting.generate import hf
from forgetting.generate.sources import _gen_spec
from forgetting.pipeline import base_stage, generate_stage, world_stage
from forgetting.store import Store


@pytest.mark.parametrize("preset", ["olmo_table2", "olmo_table3", "r1_table5"])
@pytest.mark.parametrize("method", ["cfs", "cs"])
def test_paper_presets_sample_rows_as_long_as_a_training_sequence(preset, method):
    c = compose(f"+experiment={preset}", f"method={method}")
    new, max_len = c.generator.max_new_tokens, c.trainer.max_seq_len
    assert max_len in (512, 1024)  # paper Appendix B
    # a context-free sample that does not stop early is [BOS] + new tokens: exactly one training sequence
    assert 1 + new == max_len
    assert len(encode_ids([0] * (1 + new), max_len)["input_ids"]) == max_len
    # an answer (CS) is cut with its prompt at max_len: it can fill whatever its prompt leaves
    assert new >= max_len - 1


def test_toy_default_stays_127_and_an_explicit_value_wins():
    c = compose("method=cfs")
    assert (c.trainer.max_seq_len, c.generator.max_new_tokens) == (128, 127)
    # the sampling inputs of the toy CFS chunk keys (hf: no dtype, no engine resources)
    assert _gen_spec(c.generator, "temperature", "float32") == {
        "backend": "hf", "top_p": 0.95, "max_new_tokens": 127, "batch_size": 64, "chunk": 256, "seed": 0,
        "temperature": 1.0}
    assert compose("trainer.max_seq_len=256").generator.max_new_tokens == 255
    assert compose("debug=micro").generator.max_new_tokens == 24  # conf/debug/micro.yaml sets it
    assert compose("generator.max_new_tokens=300").generator.max_new_tokens == 300
    assert compose("+experiment=r1_table5", "generator.max_new_tokens=64").generator.max_new_tokens == 64


def test_the_sampler_is_asked_for_the_training_sequence_budget(store_copy, monkeypatch):
    asked = []
    sample = hf.HFBackend.sample

    def spy(self, prompts, **kwargs):
        asked.append(kwargs["max_new_tokens"])
        return sample(self, prompts, **kwargs)

    monkeypatch.setattr(hf.HFBackend, "sample", spy)
    c = compose("debug=micro", f"store_dir={store_copy}", "method=cfs", "generator.max_new_tokens=null",
                "trainer.max_seq_len=40")
    store = Store(store_copy)
    world = world_stage(c, store)
    base = base_stage(c, store, world)
    rows = generate_stage(c, store, base, world, load_downstream(c.dataset, world), 16)
    assert asked == [39]
    assert len(rows) == 16 and max(len(r["ids"]) for r in rows) <= 40
