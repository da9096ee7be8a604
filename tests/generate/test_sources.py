"""Augmentation sources through ``generate_stage``: contextual answers (CS), their temperature, and replay (P)."""
from __future__ import annotations

import json

from conftest import compose

from forgetting.data.datasets import load_downstream
from forgetting.data.encode import IGNORE, encode_ids, encode_pair, encode_prompt, encode_text
from forgetting.data.jsonl import read_jsonl
from forgetting.data.mix import n_augment
from forgetting.pipeline import base_stage, generate_stage, train_stage, world_stage
from forgetting.runtime import tokenizer_of
from forgetting.store import Store


def _setup(store_root, *overrides):
    c = compose("debug=micro", f"store_dir={store_root}", *overrides)
    store = Store(store_root)
    world = world_stage(c, store)
    base = base_stage(c, store, world)
    return c, store, world, base, load_downstream(c.dataset, world)


def _generate_log(store, since=0):
    return [e for e in store.log()[since:] if e["stage"] == "generate"]


def test_cs_rows_keep_the_prompts_and_carry_generated_answers(store_copy):
    c, store, world, base, down = _setup(store_copy, "method=cs")
    tok = tokenizer_of(c, base)
    n = len(down) + 6  # past the end of the prompts: row j answers prompt j mod len(down)
    rows = generate_stage(c, store, base, world, down, n)
    assert len(rows) == n
    max_len = c.trainer.max_seq_len
    generated, gold = [], []
    for j, r in enumerate(rows):
        item = down[j % len(down)]
        prompt = encode_prompt(tok, c.dataset.prompt_template.format(query=item["query"]))
        k = r["n_prompt"]
        assert k == len(prompt) and r["ids"][:k] == prompt
        answer = r["ids"][k:]
        assert answer, f"row {j}: empty generated answer"
        generated.append(answer)
        pair = encode_pair(tok, c.dataset.prompt_template.format(query=item["query"]), item["response"], 10_000)
        gold.append(pair["input_ids"][len(prompt):])
        assert k < max_len  # the answer is not cut off entirely by trainer.max_seq_len
        ex = encode_ids(r["ids"], max_len, 1.0, k)
        assert ex["input_ids"] == r["ids"][:max_len]
        assert ex["labels"][:k] == [IGNORE] * k  # the prompt takes no loss ...
        assert ex["labels"][k:] == answer[:max_len - k] and IGNORE not in ex["labels"][k:]  # ... the answer does
    assert generated != gold  # model samples, not the dataset's gold answers
    assert sum(g != a for g, a in zip(generated, gold)) > n // 2
    # the wrapped rows re-answer the first prompts with fresh samples (another chunk, another seed)
    assert [r["ids"][:r["n_prompt"]] for r in rows[len(down):]] == [r["ids"][:r["n_prompt"]] for r in rows[:6]]


def test_cs_samples_at_contextual_temperature_cfs_at_temperature(store_copy, monkeypatch):
    from forgetting.generate.hf import HFBackend

    seen = []
    original = HFBackend.sample

    def spy(self, prompts, **kwargs):
        seen.append(kwargs["temperature"])
        return original(self, prompts, **kwargs)

    monkeypatch.setattr(HFBackend, "sample", spy)
    c, store, world, base, down = _setup(store_copy, "method=cs")
    n = 20  # two chunks of 16
    cs = generate_stage(c, store, base, world, down, n)
    assert seen == [0.6, 0.6]  # conf/generator/hf.yaml: contextual_temperature, paper §3

    # CS ignores generator.temperature: same keys, read back, nothing sampled
    mark = len(store.log())
    c_t = compose("debug=micro", f"store_dir={store_copy}", "method=cs", "generator.temperature=1.7")
    assert generate_stage(c_t, store, base, world, down, n) == cs
    again = _generate_log(store, mark)
    assert len(again) == 2 and all(e["hit"] for e in again) and seen == [0.6, 0.6]

    # ... and follows generator.contextual_temperature: new chunks, other samples, same prompts
    mark = len(store.log())
    c_ct = compose("debug=micro", f"store_dir={store_copy}", "method=cs", "generator.contextual_temperature=1.5")
    hot = generate_stage(c_ct, store, base, world, down, n)
    new = _generate_log(store, mark)
    assert len(new) == 2 and not any(e["hit"] for e in new) and seen[2:] == [1.5, 1.5]
    assert hot != cs and [r["ids"][:r["n_prompt"]] for r in hot] == [r["ids"][:r["n_prompt"]] for r in cs]

    # CFS is the other way round
    seen.clear()
    c_f = compose("debug=micro", f"store_dir={store_copy}", "method=cfs")
    cfs = generate_stage(c_f, store, base, world, down, n)
    assert seen == [1.0, 1.0] and all(r["n_prompt"] == 0 for r in cfs)
    mark = len(store.log())
    c_f2 = compose("debug=micro", f"store_dir={store_copy}", "method=cfs", "generator.contextual_temperature=1.5")
    assert generate_stage(c_f2, store, base, world, down, n) == cfs
    assert all(e["hit"] for e in _generate_log(store, mark)) and seen == [1.0, 1.0]
    c_f3 = compose("debug=micro", f"store_dir={store_copy}", "method=cfs", "generator.temperature=0.7")
    assert generate_stage(c_f3, store, base, world, down, n) != cfs and seen[2:] == [0.7, 0.7]


def test_replay_rows_are_corpus_documents_with_all_token_loss(store_copy):
    c, store, world, base, down = _setup(store_copy, "method=replay", "method.ratio=0.5")
    tok = tokenizer_of(c, base)
    corpus = {r["text"] for r in read_jsonl(world.path / "corpus.jsonl")}
    n_half = n_augment(len(down), c.method.ratio)
    assert n_half * 2 == len(down) == 64
    rows = generate_stage(c, store, base, world, down, n_half)
    assert len(rows) == n_half
    for r in rows:
        assert set(r) == {"text"} and r["text"] in corpus
        ex = encode_text(tok, r["text"], c.trainer.max_seq_len)
        assert ex["labels"] == ex["input_ids"] and IGNORE not in ex["labels"]
    big = generate_stage(c, store, base, world, down, 3 * n_half)
    assert big[:n_half] == rows  # a smaller request is a prefix of a larger one
    assert len({r["text"] for r in big}) > n_half  # and the larger one adds other documents
    assert not [e for e in store.log() if e["stage"] == "generate"]  # replay samples nothing

    summary = json.loads((train_stage(c, store, base, world).path / "train_summary.json").read_text())
    assert summary["rows"] == len(down) + len(down) // 2  # ratio 0.5: half as many
