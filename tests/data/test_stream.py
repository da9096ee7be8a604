"""The mid-training corpus as a stream of packed rows (forgetting/data/stream.py): rows of exactly seq_len tokens
that are the documents concatenated (none truncated, none padded), a step of exactly batch × accumulation ×
processes × seq_len document tokens, and model.midtrain on it end to end, in one process and in two."""
from __future__ import annotations

import itertools
import json

import pytest
from conftest import compose

from forgetting.data.encode import encode_text
from forgetting.data.stream import PackedCorpus
from forgetting.models import load_tokenizer
from forgetting.pipeline import base_stage, world_stage
from forgetting.store import Store

DOCS = ["a b", "the capital is here", "x", "one two three four five six seven", "ok", "short doc"]


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in DOCS) + "\n" + json.dumps({"text": ""}) + "\n")
    return path


@pytest.fixture(scope="module")
def tokenizer_dir(micro_store):
    return str(next((micro_store / "world").glob("[!.]*")) / "tokenizer")


def test_rows_are_the_documents_concatenated_cut_every_seq_len_tokens(corpus, tokenizer_dir):
    tok = load_tokenizer(tokenizer_dir)
    stream = [encode_text(tok, t, 10_000)["input_ids"] for t in DOCS]  # each [BOS] text EOS, whole
    whole = [t for doc in stream for t in doc]
    rows = list(itertools.islice(PackedCorpus(tokenizer_dir, 7, path=str(corpus)).rows(), 3 * len(whole) // 7))
    assert all(len(r["input_ids"]) == 7 and r["labels"] == r["input_ids"] for r in rows)
    flat = [t for r in rows for t in r["input_ids"]]
    # pass after pass over the documents, in file order, nothing dropped, nothing padded
    assert flat == (whole * 3)[: len(flat)]
    assert tok.pad_token_id not in flat
    limited = list(itertools.islice(PackedCorpus(tokenizer_dir, 4, path=str(corpus), limit=2).rows(), 10))
    assert [t for r in limited for t in r["input_ids"]] == ((stream[0] + stream[1]) * 10)[:40]


class Count:
    """A trainer hook counting the document tokens of each micro-batch."""

    kind, hf_optim = "optimizer", None

    def __init__(self, pad):
        self.pad, self.seen = pad, []

    def optimizer(self, cls, kwargs):
        return cls, kwargs

    def training_step(self, trainer, step, model, inputs, num_items_in_batch=None):
        self.seen.append(int((inputs["input_ids"] != self.pad).sum()))
        return step(model, inputs, num_items_in_batch)

    def gradient(self, trainer, model):
        pass

    def log(self, trainer, logs):
        pass


def test_every_step_trains_batch_times_accumulation_times_seq_len_document_tokens(corpus, tokenizer_dir, tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    from forgetting.config import TrainerConfig
    from forgetting.train.trainer import train

    tok = load_tokenizer(tokenizer_dir)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32,
                                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2))
    count = Count(tok.pad_token_id)
    t = TrainerConfig(lr=1e-3, batch_size=4, grad_accum=2, warmup_ratio=0.0, save_steps=100, logging_steps=1)
    summary = train(model, tok, PackedCorpus(tokenizer_dir, 16, path=str(corpus)), tmp_path / "out",
                    tmp_path / "work", t, steps=3, hooks=[count])
    assert count.seen == [4 * 16] * 6  # 3 steps × 2 micro-batches of 4 full rows of short documents
    assert summary["tokens"] == 3 * 4 * 2 * 16


@pytest.mark.parametrize("processes", [1, 2])
def test_midtrain_streams_packed_rows_in_one_process_or_two(micro_store, tmp_path, processes):
    overrides = ("debug=micro", f"store_dir={tmp_path / 'store'}", "model.midtrain.steps=2",
                 "model.midtrain.batch_size=4", "model.midtrain.grad_accum=2", "model.midtrain.seq_len=32",
                 f"model.midtrain.num_processes={processes}")
    import shutil

    shutil.copytree(micro_store, tmp_path / "store")
    c = compose(*overrides)
    store = Store(c.store_dir)
    mid = base_stage(c, store, world_stage(c, store))
    summary = json.loads((mid.path / "train_summary.json").read_text())
    assert mid.stage == "continue" and summary["steps"] == 2 and summary["processes"] == processes
    assert summary["tokens"] == 2 * 4 * 2 * processes * 32
    assert (mid.path / "optimizer.pt").exists()  # a further continuation carries its AdamW state


def test_midtrain_of_a_hub_model_under_zero3_in_two_processes(tiny_olmo, tmp_path):
    """paper 003's mid-training on the fine-tuning trainer's ZeRO-3 path: 2 CPU processes, packed rows of a local
    Dolma-style corpus, a plain checkpoint at the end; no optimizer state is kept (ZeRO partitions it)."""
    from conftest import ROOT

    zero3 = {"zero_optimization": {"stage": 3, "stage3_gather_16bit_weights_on_model_save": True},
             "train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": "auto",
             "train_batch_size": "auto", "gradient_clipping": "auto"}
    c = compose("debug=micro", "model.source=hf", f"model.path={tiny_olmo}", f"store_dir={tmp_path / 'store'}",
                "model.midtrain.steps=2", "model.midtrain.batch_size=2", "model.midtrain.seq_len=16",
                f"model.midtrain.corpus={ROOT / 'tests/fixtures/dolma.jsonl'}", "model.midtrain.num_processes=2",
                "dataset.source=jsonl",
                f"dataset.path={ROOT / 'tests/fixtures/metamathqa.jsonl'}", "eval.tasks=[]", "eval.downstream=[]")
    c.model.midtrain.deepspeed = zero3  # as conf/trainer/deepspeed_zero3.yaml's section would set it
    mid = base_stage(c, Store(c.store_dir), None)
    summary = json.loads((mid.path / "train_summary.json").read_text())
    assert summary["steps"] == 2 and summary["processes"] == 2 and summary["tokens"] == 2 * 2 * 2 * 16
    assert (mid.path / "model.safetensors").exists() and not (mid.path / "optimizer.pt").exists()
