"""Wise-FT: exact endpoints, the midpoint, copied side files, sharded checkpoints, and one fine-tune per α grid."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import ROOT, compose
from safetensors.torch import load_file

from forgetting.merge.wise_ft import INDEX, wise_ft
from forgetting.pipeline import run
from forgetting.store import Store

FIXTURES = ROOT / "tests" / "fixtures"


def _save_tiny(path: Path, seed: int, tokenizer_text: str, **save_kwargs) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=2, num_key_value_heads=2))
    model.save_pretrained(str(path), **save_kwargs)
    (path / "tokenizer.json").write_text(tokenizer_text)  # a stand-in for the tokenizer files
    return path


def _weights(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint, single-file or sharded."""
    if (path / INDEX).exists():
        shards = set(json.loads((path / INDEX).read_text())["weight_map"].values())
    else:
        shards = {"model.safetensors"}
    out = {}
    for shard in shards:
        out.update(load_file(str(path / shard)))
    return out


@pytest.fixture
def pair(tmp_path):
    base = _save_tiny(tmp_path / "base", 0, '{"who": "base"}')
    ft = _save_tiny(tmp_path / "ft", 1, '{"who": "ft"}')
    (ft / "manifest.json").write_text("{}")  # the store's own file: not part of the model
    return base, ft


def _merge(base, ft, out, alpha):
    out.mkdir()
    wise_ft(base, ft, out, alpha)
    return _weights(out)


def test_endpoints_are_exact_and_half_is_the_midpoint(pair, tmp_path):
    base, ft = pair
    wb, wf = _weights(base), _weights(ft)
    assert any(not torch.equal(wb[k], wf[k]) for k in wb)  # the two models differ
    at1 = _merge(base, ft, tmp_path / "a1", 1.0)
    at0 = _merge(base, ft, tmp_path / "a0", 0.0)
    half = _merge(base, ft, tmp_path / "a05", 0.5)
    assert set(at1) == set(at0) == set(half) == set(wf)
    for k in wf:
        assert at1[k].dtype == at0[k].dtype == half[k].dtype == wf[k].dtype
        assert torch.equal(at1[k], wb[k]), k  # α = 1: the base weights, bit for bit
        assert torch.equal(at0[k], wf[k]), k  # α = 0: the fine-tuned weights, bit for bit
        assert torch.allclose(half[k], (wb[k] + wf[k]) / 2, rtol=0, atol=1e-7), k


def test_side_files_are_copied_from_the_fine_tuned_model(pair, tmp_path):
    base, ft = pair
    out = tmp_path / "out"
    _merge(base, ft, out, 0.3)
    assert (out / "tokenizer.json").read_text() == '{"who": "ft"}'
    assert (out / "config.json").read_text() == (ft / "config.json").read_text()
    assert (out / "generation_config.json").exists()
    assert not (out / "manifest.json").exists()
    from transformers import AutoModelForCausalLM

    merged = AutoModelForCausalLM.from_pretrained(str(out))  # a loadable checkpoint
    wb, wf = _weights(base), _weights(ft)
    for k, p in merged.state_dict().items():
        if k in wf:
            assert torch.allclose(p, 0.3 * wb[k] + 0.7 * wf[k], atol=1e-6), k


@pytest.mark.parametrize("base_sharded", [False, True])
def test_sharded_checkpoint_is_merged_shard_by_shard(tmp_path, base_sharded):
    base = _save_tiny(tmp_path / "base", 0, "b", **({"max_shard_size": "30KB"} if base_sharded else {}))
    ft = _save_tiny(tmp_path / "ft", 1, "f", max_shard_size="50KB")
    index = json.loads((ft / INDEX).read_text())["weight_map"]
    shards = set(index.values())
    assert len(shards) > 1  # the fixture really is sharded
    assert ((base / INDEX).exists()) == base_sharded
    wb, wf = _weights(base), _weights(ft)

    out = tmp_path / "out"
    out.mkdir()
    wise_ft(base, ft, out, 0.25)
    assert json.loads((out / INDEX).read_text())["weight_map"] == index  # the index is copied
    assert {p.name for p in out.glob("*.safetensors")} == shards and not (out / "model.safetensors").exists()
    for shard in shards:  # each output shard holds exactly the tensors its input shard held
        merged = load_file(str(out / shard))
        assert set(merged) == {k for k, s in index.items() if s == shard}
        for k, t in merged.items():
            assert torch.allclose(t, 0.25 * wb[k] + 0.75 * wf[k], atol=1e-6), k

    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(str(out)) is not None

    for alpha, expected in ((1.0, wb), (0.0, wf)):  # exact endpoints hold across shards too
        w = _merge(base, ft, tmp_path / f"end{alpha}", alpha)
        assert all(torch.equal(w[k], expected[k]) for k in wf)


def test_fine_tuned_tensor_missing_from_the_base_is_an_error(pair, tmp_path):
    from safetensors.torch import save_file

    base, ft = pair
    w = _weights(ft)
    w["extra.weight"] = torch.ones(2)
    save_file(w, str(ft / "model.safetensors"), metadata={"format": "pt"})
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ValueError, match="extra.weight"):
        wise_ft(base, ft, out, 0.5)


def test_alpha_grid_fine_tunes_once(store_copy, tmp_path):
    results = {}
    for a in (0.2, 0.8):
        c = compose("debug=micro", f"store_dir={store_copy}", "method=wise_ft", f"method.alpha={a}")
        results[a] = run(c, tmp_path / str(a))
    log = Store(store_copy).log()

    def hits(stage):
        return [e["hit"] for e in log if e["stage"] == stage]

    assert hits("train") == [False, True]  # the second α reads the first α's fine-tuned model
    assert hits("merge") == [False, False]  # one merge per α
    assert hits("evaluate") == [False, False]
    train_keys = {e["key"] for e in log if e["stage"] == "train"}
    merge_keys = {e["key"] for e in log if e["stage"] == "merge"}
    assert len(train_keys) == 1 and len(merge_keys) == 2
    assert {results[a]["artifacts"]["model"] for a in results} == merge_keys  # each run evaluated its merge

    tuned = Store(store_copy).path("train", train_keys.pop())
    base = Store(store_copy).path("pretrain", results[0.2]["artifacts"]["base"])
    wb, wt = load_file(str(base / "model.safetensors")), load_file(str(tuned / "model.safetensors"))
    for a in (0.2, 0.8):
        merged = load_file(str(Store(store_copy).path("merge", results[a]["artifacts"]["model"]) /
                               "model.safetensors"))
        assert all(torch.allclose(merged[k], a * wb[k] + (1 - a) * wt[k], atol=1e-6) for k in wt)


def test_merge_keeps_the_wider_dtype_so_both_endpoints_are_exact(tmp_path):
    """A bf16 fine-tune of an fp32 base (OLMo-1B-hf's hub weights are fp32, the preset trains in bf16)."""
    from safetensors.torch import save_file

    base = _save_tiny(tmp_path / "base", 0, "b")
    ft = _save_tiny(tmp_path / "ft", 1, "f")
    save_file({k: v.to(torch.bfloat16) for k, v in _weights(ft).items()}, str(ft / "model.safetensors"),
              metadata={"format": "pt"})
    wb, wf = _weights(base), _weights(ft)
    at1, at0 = _merge(base, ft, tmp_path / "a1", 1.0), _merge(base, ft, tmp_path / "a0", 0.0)
    assert all(at1[k].dtype == torch.float32 and torch.equal(at1[k], wb[k]) for k in wb)
    assert all(torch.equal(at0[k], wf[k].float()) for k in wf)


def _hub_cache(model: Path, repo_id: str) -> Path:
    """``model``'s files laid out in the local HF hub cache as a download leaves them: content-named blobs, a
    snapshot of symlinks to them under the commit, and ``refs/main`` naming that commit."""
    import hashlib
    import os
    import shutil

    from huggingface_hub import constants

    repo = Path(constants.HF_HUB_CACHE) / f"models--{repo_id.replace('/', '--')}"
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir()
    for f in model.iterdir():
        blob = repo / "blobs" / hashlib.sha256(f.read_bytes()).hexdigest()
        shutil.copyfile(f, blob)
        (snapshot / f.name).symlink_to(os.path.relpath(blob, snapshot))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return snapshot


def _wise_ft_run(store_dir: Path, run_dir: Path, model_path: str, alpha: float = 1.0) -> dict:
    c = compose("model=olmo_1b", f"model.path={model_path}", "dataset=metamathqa", "dataset.source=jsonl",
                f"dataset.path={FIXTURES / 'metamathqa.jsonl'}", "trainer=olmo_1b", "debug=dry", "method=wise_ft",
                f"method.alpha={alpha}", "eval=olmo_suite", "eval.tasks=[]", "eval.downstream=[]",
                f"store_dir={store_dir}")
    return run(c, run_dir)


@pytest.mark.parametrize("where", ["local directory", "hub id in the local hub cache"])
def test_wise_ft_on_a_hub_or_local_base_returns_the_base_at_alpha_1(tiny_olmo, tmp_path, where):
    """The OLMo presets' base is ``model.path``, a hub id or a local directory (on the old code both raised
    NotImplementedError): Wise-FT reads the base's weights from there, or from the hub cache, offline."""
    import os

    assert os.environ["HF_HUB_OFFLINE"] == "1"
    path = str(tiny_olmo)
    if where != "local directory":
        path = f"forgetting-tests/tiny-olmo-{tmp_path.name}"
        _hub_cache(tiny_olmo, path)
    result = _wise_ft_run(tmp_path / "store", tmp_path / "run", path)
    store = Store(tmp_path / "store")
    merged = _weights(store.path("merge", result["artifacts"]["model"]))
    tuned = _weights(store.path("train", [e["key"] for e in store.log() if e["stage"] == "train"][0]))
    base = _weights(tiny_olmo)
    assert set(merged) == set(base)
    assert all(torch.equal(merged[k], base[k]) for k in base)  # α = 1: the base weights, bit for bit
    assert any(not torch.equal(tuned[k], base[k].to(tuned[k].dtype)) for k in base)  # ... of a model that moved


def test_a_hub_base_missing_from_the_offline_cache_is_one_clear_error(tiny_olmo, tmp_path):
    from forgetting.models import model_dir

    with pytest.raises(FileNotFoundError, match=r"model.path='nobody/no-such-model' .* expected a local "
                                                r"directory, or the hub id's files in \$HF_HOME/hub") as err:
        model_dir("nobody/no-such-model")
    assert "\n" not in str(err.value)
