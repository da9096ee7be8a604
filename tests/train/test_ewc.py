"""EWC (forgetting/parts/ewc.py): the Fisher is the mean squared batch gradient, the penalty's gradient is
2λF⊙(θ − θ*) on the step's gradient, the Fisher is a cached stage shared across a λ grid, a strong λ holds the
weights nearer the base than FT, and LoRA is refused in one line."""
from __future__ import annotations

import json
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
from conftest import ROOT, compose
from safetensors.torch import load_file

from forgetting.errors import ConfigError
from forgetting.parts.ewc import EWC, EwcKnobs, estimate_fisher, fisher_rows


def _tiny():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=16))


def _rows(n=6):
    from forgetting.data.encode import encode_ids

    g = torch.Generator().manual_seed(1)
    return [encode_ids(torch.randint(1, 32, (10,), generator=g).tolist(), 10) for _ in range(n)]


def _batch_level(model, rows, batch_size):
    """The shortcut this project used before: the mean over batches of the squared gradient of a batch's mean loss."""
    from forgetting.data.encode import Collator

    out = None
    for start in range(0, len(rows), batch_size):
        b = Collator(0)(rows[start:start + batch_size])
        model.zero_grad()
        model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], labels=b["labels"]).loss.backward()
        sq = {n: p.grad.pow(2) * batch_size / len(rows) for n, p in model.named_parameters()}
        out = sq if out is None else {n: out[n] + sq[n] for n in sq}
    return out


def test_the_fisher_is_the_mean_squared_per_sequence_gradient_whatever_the_batches():
    model, rows = _tiny(), _rows(64)
    fisher = estimate_fisher(model, rows, 0)
    # by hand: each sequence's gradient squared, averaged
    expected = None
    for r in rows:
        model.zero_grad()
        ids = torch.tensor([r["input_ids"]])
        model(input_ids=ids, labels=torch.tensor([r["labels"]])).loss.backward()
        sq = {n: p.grad.pow(2) / len(rows) for n, p in model.named_parameters()}
        expected = sq if expected is None else {n: expected[n] + sq[n] for n in sq}
    for n in expected:
        assert torch.allclose(fisher[n], expected[n], rtol=1e-5, atol=1e-12), n
    # the rows the stage draws are fixed by N and the seed: 8 batches of 8 and 1 batch of 64 are the same 64 rows
    assert fisher_rows(_rows(200), 8 * 8, seed=3) == fisher_rows(_rows(200), 1 * 64, seed=3)
    # the batch-level shortcut shrinks with the batch (E[ḡ²] = μ² + σ²/B): B=8 and B=64 give other Fishers
    total = lambda f: sum(float(v.sum()) for v in f.values())  # noqa: E731
    small, large = total(_batch_level(model, rows, 8)), total(_batch_level(model, rows, 64))
    assert large < 0.5 * small and small < total(fisher)


def test_the_penalty_gradient_is_two_lambda_f_times_the_distance(tmp_path):
    from safetensors.torch import save_file

    model = _tiny()
    anchor = {n: p.detach().clone() for n, p in model.named_parameters()}
    fisher = {n: torch.rand_like(p) for n, p in model.named_parameters()}
    save_file(fisher, str(tmp_path / "fisher.safetensors"))
    save_file(anchor, str(tmp_path / "anchor.safetensors"))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1)
    ewc = EWC(EwcKnobs(ewc_lambda=3.0))
    ewc.fisher_dir = tmp_path
    trainer = SimpleNamespace(model=model, accelerator=SimpleNamespace(sync_gradients=True))
    ids = torch.tensor([[1, 2, 3, 4]])
    model.zero_grad()
    model(input_ids=ids, labels=ids).loss.backward()
    plain = {n: p.grad.clone() for n, p in model.named_parameters()}
    ewc.gradient(trainer, model)
    for n, p in model.named_parameters():
        expected = plain[n] + 2 * 3.0 * fisher[n] * (p.detach() - anchor[n])
        assert torch.allclose(p.grad, expected, atol=1e-6), n
    assert ewc.penalty(model) == pytest.approx(3.0 * sum(float((fisher[n] * 0.01).sum()) for n in fisher), rel=1e-4)


def _distance(store, result):
    """Σ F(θ − θ*)²: the distance EWC penalises (F from the run's Fisher stage)."""
    fisher = load_file(str(next((store / "fisher").glob("[!.]*")) / "fisher.safetensors"))
    base = load_file(str(store / "pretrain" / result["artifacts"]["base"] / "model.safetensors"))
    tuned = load_file(str(store / "train" / result["artifacts"]["model"] / "model.safetensors"))
    return sum(float((fisher[k] * (tuned[k] - base[k]).pow(2)).sum()) for k in base if k in fisher)


def test_a_lambda_grid_shares_one_fisher_and_a_strong_lambda_holds_the_weights(store_copy, tmp_path):
    args = [sys.executable, str(ROOT / "launch.py"), "--multirun", "debug=micro", f"store_dir={store_copy}",
            "method=ft,ewc", "method.ewc_lambda=1e2,1e6", "method.fisher_batches=4", "eval.tasks=[]",
            "eval.downstream=[]", f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = [json.loads((tmp_path / "sweep" / str(i) / "results.json").read_text()) for i in range(4)]
    ft, _, weak, strong = runs  # ft twice (one model: the λ knob is EWC's), ewc at 1e2 and 1e6
    assert runs[0]["artifacts"]["model"] == runs[1]["artifacts"]["model"]
    assert len(list((store_copy / "fisher").glob("[!.]*"))) == 1
    assert _distance(store_copy, strong) < 0.5 * _distance(store_copy, weak) <= 0.5 * _distance(store_copy, ft)
    assert weak["artifacts"]["model"] != strong["artifacts"]["model"]
    logged = [json.loads(x) for x in open(tmp_path / "sweep" / "3" / "train_log.jsonl")]
    assert any("ewc" in e for e in logged)


def test_ewc_with_lora_is_refused_in_one_line():
    with pytest.raises(ConfigError, match="method.adapter=lora is invalid with method.regularizer=ewc"):
        compose("method=lora", "method.regularizer=ewc")
