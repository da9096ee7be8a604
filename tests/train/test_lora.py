"""LoRA: only adapters train, the merged checkpoint is the adapter model, alpha defaults to rank, CFS composes."""
from __future__ import annotations

import json

import pytest
import torch
from conftest import compose
from safetensors.torch import load_file

from forgetting.config import TrainerConfig
from forgetting.data.datasets import load_downstream
from forgetting.data.encode import encode_pair
from forgetting.parts.lora import with_lora
from forgetting.pipeline import base_stage, train_stage, world_stage
from forgetting.runtime import load
from forgetting.store import Store
from forgetting.train.trainer import train

LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")  # per Llama block




def _lora_layers(peft_model):
    from peft.tuners.lora import LoraLayer

    return {name: m for name, m in peft_model.named_modules() if isinstance(m, LoraLayer)}


def _plain_name(peft_name: str) -> str:
    """``base_model.model.model.layers.0.self_attn.q_proj`` → ``model.layers.0.self_attn.q_proj``"""
    return peft_name.removeprefix("base_model.model.")


@pytest.fixture(scope="module")
def trained(micro_store, tmp_path_factory):
    """A rank-4 LoRA of the micro base model trained 3 steps by ``train()``, with what it looked like before the
    merge: the adapter model's logits on a fixed batch and its trained adapter weights."""
    c = compose("debug=micro", f"store_dir={micro_store}")
    store = Store(micro_store)
    world = world_stage(c, store)
    base = base_stage(c, store, world)
    model, tok = load(c, base)
    rows = [encode_pair(tok, c.dataset.prompt_template.format(query=r["query"]), r["response"], 96)
            for r in load_downstream(c.dataset, world)]
    peft_model = with_lora(model, 4, None)
    before = {n: p.detach().clone() for n, p in peft_model.named_parameters()}
    width = min(len(rows[0]["input_ids"]), len(rows[1]["input_ids"]))
    probe = torch.tensor([rows[0]["input_ids"][:width], rows[1]["input_ids"][:width]])
    seen = {}
    merge = peft_model.merge_and_unload

    def spy(*args, **kwargs):  # runs inside train(), right before the merge
        peft_model.eval()
        with torch.no_grad():
            seen["logits"] = peft_model(input_ids=probe).logits.clone()
        seen["params"] = {n: p.detach().clone() for n, p in peft_model.named_parameters()}
        seen["layers"] = {n: (m.scaling["default"]) for n, m in _lora_layers(peft_model).items()}
        return merge(*args, **kwargs)

    peft_model.merge_and_unload = spy
    out, work = tmp_path_factory.mktemp("lora_out"), tmp_path_factory.mktemp("lora_work")
    summary = train(peft_model, tok, rows, out, work, TrainerConfig(lr=1e-2, batch_size=8, save_steps=50,
                                                                    logging_steps=1), steps=3, seed=0)
    assert "logits" in seen, "train() did not merge the adapter before saving"
    return {"c": c, "base": base, "out": out, "before": before, "summary": summary, "probe": probe, **seen}


def test_only_adapter_parameters_are_trainable(micro_store):
    c = compose("debug=micro", f"store_dir={micro_store}")
    store = Store(micro_store)
    model, _ = load(c, base_stage(c, store, world_stage(c, store)))
    peft_model = with_lora(model, 4, None)
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    # an adapter on every linear layer of every block ("all-linear"), none on the output head
    layers = {_plain_name(n) for n in _lora_layers(peft_model)}
    n_blocks = c.model.arch.num_layers
    assert len(layers) == n_blocks * len(LINEARS)
    assert all(name.rsplit(".", 1)[-1] in LINEARS for name in layers)
    assert len(trainable) == 2 * len(layers)  # lora_A and lora_B


def test_training_moves_adapters_only(trained):
    after = trained["params"]
    assert trained["summary"]["steps"] == 3
    lora = [n for n in after if "lora_" in n]
    frozen = [n for n in after if "lora_" not in n]
    assert lora and frozen
    for n in frozen:
        assert torch.equal(after[n], trained["before"][n]), f"{n} moved"
    for n in lora:
        assert not torch.equal(after[n], trained["before"][n]), f"{n} did not move"


def test_saved_checkpoint_is_the_merged_adapter_model(trained):
    from transformers import AutoModelForCausalLM

    saved = load_file(str(trained["out"] / "model.safetensors"))
    base_sd = load_file(str(trained["base"].path / "model.safetensors"))
    assert set(saved) == set(base_sd)  # a plain checkpoint of the base architecture: no lora_ / base_layer keys
    assert not [k for k in saved if "lora_" in k or "base_layer" in k]

    # merged weight = frozen base weight + scaling · B·A of the trained adapter; every other tensor is the base's
    params, merged_linears = trained["params"], set()
    for layer, scaling in trained["layers"].items():
        key = _plain_name(layer) + ".weight"
        a, b = params[f"{layer}.lora_A.default.weight"], params[f"{layer}.lora_B.default.weight"]
        assert torch.allclose(saved[key], base_sd[key] + scaling * (b @ a), atol=1e-6), key
        assert not torch.equal(saved[key], base_sd[key])
        merged_linears.add(key)
    for key in set(saved) - merged_linears:
        assert torch.equal(saved[key], base_sd[key]), key

    reloaded = AutoModelForCausalLM.from_pretrained(str(trained["out"])).eval()
    with torch.no_grad():
        logits = reloaded(input_ids=trained["probe"]).logits
    assert torch.allclose(logits, trained["logits"], atol=1e-5)
    base_model = AutoModelForCausalLM.from_pretrained(str(trained["base"].path)).eval()
    with torch.no_grad():
        assert not torch.allclose(base_model(input_ids=trained["probe"]).logits, trained["logits"], atol=1e-3)


def _tiny_model():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                        num_attention_heads=2, num_key_value_heads=2))


def test_alpha_defaults_to_rank():
    c = compose("debug=micro", "method=lora")
    assert c.method.lora_alpha is None and c.method.lora_rank == 16  # conf/method/lora.yaml
    peft_model = with_lora(_tiny_model(), c.method.lora_rank, c.method.lora_alpha)
    cfg = peft_model.peft_config["default"]
    assert cfg.r == 16 and cfg.lora_alpha == 16
    assert all(m.scaling["default"] == 1.0 for m in _lora_layers(peft_model).values())
    c2 = compose("debug=micro", "method=lora", "method.lora_rank=4", "method.lora_alpha=8")
    explicit = with_lora(_tiny_model(), c2.method.lora_rank, c2.method.lora_alpha)
    assert explicit.peft_config["default"].lora_alpha == 8
    assert all(m.scaling["default"] == 2.0 for m in _lora_layers(explicit).values())


def test_lora_and_cfs_compose(store_copy):
    c = compose("debug=micro", f"store_dir={store_copy}", "method=lora", "method.augment=context_free",
                "method.lora_rank=4")
    store = Store(store_copy)
    world = world_stage(c, store)
    base = base_stage(c, store, world)
    art = train_stage(c, store, base, world)
    summary = json.loads((art.path / "train_summary.json").read_text())
    n_down = len(load_downstream(c.dataset, world))
    assert summary["rows"] == n_down + n_down  # downstream + context-free samples at ratio 1
    assert summary["steps"] == c.trainer.max_steps
    gen = [e for e in store.log() if e["stage"] == "generate"]
    assert len(gen) == 4 and not any(e["hit"] for e in gen)  # ceil(64 / chunk 16) chunks sampled
    saved = load_file(str(art.path / "model.safetensors"))
    base_sd = load_file(str(base.path / "model.safetensors"))
    assert set(saved) == set(base_sd)
    moved = {k for k in saved if not torch.equal(saved[k], base_sd[k])}
    assert moved and all(k.rsplit(".", 2)[-2] in LINEARS for k in moved)  # only adapted layers changed


def test_adapter_init_follows_the_run_seed_not_the_process_history(micro_store):
    from forgetting.pipeline import trainable_model

    def adapters(seed: int) -> dict[str, torch.Tensor]:
        c = compose("debug=micro", f"store_dir={micro_store}", "method=lora", "method.lora_rank=4", f"seed={seed}")
        store = Store(micro_store)
        model = trainable_model(c, base_stage(c, store, world_stage(c, store)))
        return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_A" in n}

    first = adapters(0)
    torch.rand(1000)  # whatever ran before in this process (another sweep point) must not matter
    again = adapters(0)
    other = adapters(1)
    assert first and first.keys() == again.keys()
    assert all(torch.equal(first[n], again[n]) for n in first)
    assert not all(torch.equal(first[n], other[n]) for n in first)
