"""Robustness to weight perturbation (forgetting/evaluate/robust.py): the noise has exactly the stated norm per
matrix, NF4 quantize-dequantize is what bitsandbytes' Linear4bit computes with, the weights come back bit for bit,
and the evaluator reports the loss rises through launch.py."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, compose

from forgetting.errors import ConfigError
from forgetting.evaluate.robust import add_noise_, nf4_linears, nf4_roundtrip, perturbed, robustness, weight_matrices


def _tiny_model():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32,
                                        tie_word_embeddings=False))


@pytest.mark.parametrize("gamma", [0.009, 0.025, 0.2])
def test_the_noise_has_exactly_the_stated_norm_per_matrix_and_is_seeded(gamma):
    model = _tiny_model()
    named = weight_matrices(model)
    before = {n: p.detach().clone() for n, p in named}
    add_noise_([p for _, p in named], gamma, seed=3)
    for n, p in named:
        moved = torch.linalg.vector_norm(p.detach() - before[n])
        assert float(moved) == pytest.approx(gamma * float(torch.linalg.vector_norm(before[n])), rel=1e-4), n
    again = _tiny_model()
    add_noise_([p for _, p in weight_matrices(again)], gamma, seed=3)
    assert all(torch.equal(p, dict(named)[n]) for n, p in weight_matrices(again))
    other = _tiny_model()
    add_noise_([p for _, p in weight_matrices(other)], gamma, seed=4)
    assert not torch.equal(weight_matrices(other)[0][1], named[0][1])


def test_nf4_roundtrip_matches_what_linear4bit_computes():
    import bitsandbytes as bnb

    model = _tiny_model()
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m is not model.lm_head]
    assert [m.weight for m in linears] == nf4_linears(model)  # every decoder linear, not the head
    x = torch.randn(7, 64)
    for lin in linears[:3]:
        q = bnb.nn.Linear4bit(lin.in_features, lin.out_features, bias=lin.bias is not None,
                              compute_dtype=torch.float32, quant_type="nf4")
        q.weight = bnb.nn.Params4bit(lin.weight.data.clone(), requires_grad=False, quant_type="nf4")
        q = q.to("cpu")
        expected = q(x[:, :lin.in_features])
        ours = torch.nn.functional.linear(x[:, :lin.in_features], nf4_roundtrip(lin.weight.data), lin.bias)
        assert torch.equal(ours, expected)
        rel = torch.linalg.vector_norm(nf4_roundtrip(lin.weight.data) - lin.weight.data) / torch.linalg.vector_norm(
            lin.weight.data)
        assert 0.01 < float(rel) < 0.2  # 4 bits: a real, bounded error


def test_weights_come_back_bit_for_bit_and_the_loss_rises_with_gamma():
    model = _tiny_model()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    ids = torch.randint(0, 64, (4, 16), generator=torch.Generator().manual_seed(0))

    def loss():
        with torch.no_grad():
            return float(model(input_ids=ids, labels=ids).loss)

    out = robustness(model, loss, [0.01, 0.5, 2.0], seeds=2, nf4=True)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    assert out["robust/clean/loss"] == loss()
    rises = [out[f"robust/noise_{g:g}/increase"] for g in (0.01, 0.5, 2.0)]
    assert abs(rises[0]) < rises[1] < rises[2]
    assert "robust/nf4/increase" in out
    with pytest.raises(RuntimeError):
        with perturbed([p for _, p in weight_matrices(model)], lambda ps: add_noise_(ps, 1.0, 0)):
            raise RuntimeError("a failing evaluation")
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_the_evaluator_runs_through_launch_and_needs_held_out_text(store_copy, tmp_path):
    args = [sys.executable, str(ROOT / "launch.py"), "debug=micro", "method=base", f"store_dir={store_copy}",
            "eval.tasks=[]", "eval.downstream=[]", "eval.downstream_loss=true", "eval.robust_noise=[0.02,0.3]",
            "eval.robust_seeds=2", "eval.robust_nf4=true", f"hydra.run.dir={tmp_path / 'run'}"]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = json.loads((tmp_path / "run" / "results.json").read_text())["metrics"]
    assert m["robust/clean/loss"] == pytest.approx(m["pre/heldout/loss"], rel=1e-6)
    assert m["robust/noise_0.3/increase"] > m["robust/noise_0.02/increase"]
    assert m["down/arith/loss"] > 0 and "robust/nf4/increase" in m
    with pytest.raises(ConfigError, match=r"eval.robust_noise=\[\] is invalid: expected held-out text"):
        compose("model=smollm2_135m", "dataset=jsonl", f"dataset.path={ROOT / 'tests/fixtures/metamathqa.jsonl'}",
                "eval.tasks=[]", "eval.downstream=[]", "eval.robust_nf4=true")
