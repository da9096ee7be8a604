"""Diff-vector recycling (paper 004; forgetting/merge/diff.py, forgetting/parts/recycle.py): onto the same version
it reproduces the fine-tuned model, scale 0 is the target, mismatched shapes and vocabularies are refused in one
line, the diagnostics are the norms they name; through launch.py on toy versions (checkpoints of one constant-lr
run), the source fine-tune is that version's own FT artifact, recycling only / recycle-then-FT / iterative / direct
each run and key apart; a stage-2 version continues on the world's corpus reweighted."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, compose
from safetensors.torch import load_file, save_file

from forgetting.merge.diff import add_diff


def _model(path, tensors, vocab=None):
    path.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path / "model.safetensors"))
    (path / "config.json").write_text("{}")
    if vocab is not None:
        (path / "tokenizer.json").write_text(json.dumps({"model": {"vocab": vocab}}))
    return path


@pytest.fixture
def three(tmp_path):
    g = torch.Generator().manual_seed(0)
    base = {"w": torch.randn(8, 4, generator=g), "b": torch.randn(4, generator=g)}
    tuned = {k: v + 0.1 * torch.randn(v.shape, generator=g) for k, v in base.items()}
    target = {k: v + 0.3 * torch.randn(v.shape, generator=g) for k, v in base.items()}
    vocab = {"a": 0, "b": 1}
    return (_model(tmp_path / "t", target, vocab), _model(tmp_path / "sb", base, vocab),
            _model(tmp_path / "sf", tuned, vocab), target, base, tuned)


def test_onto_the_same_version_it_reproduces_the_fine_tuned_model(three, tmp_path):
    _, sb, sf, _, base, tuned = three
    add_diff(sb, sb, sf, (tmp_path / "o").mkdir() or tmp_path / "o", 1.0)
    out = load_file(str(tmp_path / "o" / "model.safetensors"))
    for k in tuned:
        assert torch.allclose(out[k], tuned[k], atol=1e-6, rtol=0), k  # b + (f − b): f up to one rounding


def test_scale_zero_is_the_target_and_the_diagnostics_are_the_norms(three, tmp_path):
    t, sb, sf, target, base, tuned = three
    (tmp_path / "o").mkdir()
    info = add_diff(t, sb, sf, tmp_path / "o", 0.0)
    out = load_file(str(tmp_path / "o" / "model.safetensors"))
    assert all(torch.equal(out[k], target[k]) for k in target)
    diff = math.sqrt(sum(float((tuned[k] - base[k]).pow(2).sum()) for k in base))
    gap = math.sqrt(sum(float((target[k] - base[k]).pow(2).sum()) for k in base))
    dot = sum(float(((tuned[k] - base[k]) * (target[k] - base[k])).sum()) for k in base)
    assert info["diff_norm"] == pytest.approx(diff, rel=1e-5)
    assert info["version_gap_norm"] == pytest.approx(gap, rel=1e-5)
    assert info["cos_diff_gap"] == pytest.approx(dot / (diff * gap), rel=1e-4)
    assert json.loads((tmp_path / "o" / "recycle.json").read_text())["scale"] == 0.0
    assert (tmp_path / "o" / "tokenizer.json").exists()
    (tmp_path / "h").mkdir()
    add_diff(t, sb, sf, tmp_path / "h", 0.5)
    half = load_file(str(tmp_path / "h" / "model.safetensors"))
    assert torch.allclose(half["w"], target["w"] + 0.5 * (tuned["w"] - base["w"]), atol=1e-6)


def test_mismatched_shapes_and_vocabularies_are_refused(three, tmp_path):
    t, sb, sf, target, base, tuned = three
    grown = _model(tmp_path / "g", {"w": torch.zeros(9, 4), "b": torch.zeros(4)}, {"a": 0, "b": 1})
    (tmp_path / "o").mkdir()
    with pytest.raises(ValueError, match=r"recycle: w has shape \(9, 4\) in the target"):
        add_diff(grown, sb, sf, tmp_path / "o", 1.0)
    other = _model(tmp_path / "v", target, {"a": 0, "c": 1})
    with pytest.raises(ValueError, match="tokenizers .* differ"):
        add_diff(other, sb, sf, tmp_path / "o", 1.0)
    missing = _model(tmp_path / "m", {"w": base["w"]}, {"a": 0, "b": 1})
    with pytest.raises(ValueError, match="the source base has no tensor 'b'"):
        add_diff(t, missing, sf, tmp_path / "o", 1.0)
    # the fine-tune's tokenizer is checked too: an Instruct model with other tokens at the same ids
    chat = _model(tmp_path / "c", tuned, {"a": 0, "<|user|>": 1})
    with pytest.raises(ValueError, match=r"\(source fine-tune\) differ"):
        add_diff(t, sb, chat, tmp_path / "o", 1.0)
    # no tokenizer at all: refused, not skipped
    bare = _model(tmp_path / "n", target)
    with pytest.raises(ValueError, match="cannot read the tokenizer of .*: expected a tokenizer beside each model"):
        add_diff(bare, sb, sf, tmp_path / "o", 1.0)


VERSIONS = ["model.pretrain.schedule=constant", "model.pretrain.segment_steps=10"]


def _launch(store, tmp_path, name, *overrides):
    args = [sys.executable, str(ROOT / "launch.py"), "debug=micro", f"store_dir={store}", "eval.tasks=[]",
            *VERSIONS, *overrides, f"hydra.run.dir={tmp_path / name}"]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((tmp_path / name / "results.json").read_text())


def test_recycling_on_toy_versions_end_to_end(store_copy, tmp_path):
    src = "'method.recycle_from=[{pretrain: {steps: 10}}]'".strip("'")
    ft10 = _launch(store_copy, tmp_path, "ft10", "method=ft", "model.pretrain.steps=10")
    only = _launch(store_copy, tmp_path, "only", "method=recycle", "model.pretrain.steps=20", src,
                   "method.recycle_train=false")
    then = _launch(store_copy, tmp_path, "then", "method=recycle", "model.pretrain.steps=20", src)
    # the 20-step version continues the 10-step one: one stored prefix
    assert len(list((store_copy / "pretrain").glob("[!.]*"))) >= 1
    recycled = list((store_copy / "recycle").glob("[!.]*"))
    assert len(recycled) == 1  # recycling only and recycle-then-FT start from the same recycled model
    assert only["artifacts"]["model"] == recycled[0].name
    info = json.loads((recycled[0] / "recycle.json").read_text())
    assert info["diff_norm"] > 0 and info["version_gap_norm"] > 0
    # the source fine-tune is the 10-step version's own FT model: trained once
    trained = [p.name for p in (store_copy / "train").glob("[!.]*")]
    assert ft10["artifacts"]["model"] in trained and len(trained) == 2  # FT on v10, and recycle-then-FT on v20
    assert then["artifacts"]["model"] not in (only["artifacts"]["model"], ft10["artifacts"]["model"])
    assert "down/arith/exact_match" in only["metrics"] and "down/arith/exact_match" in then["metrics"]


def test_iterative_and_direct_recycling_key_apart():
    from forgetting.pipeline import plan

    chain = "method.recycle_from=[{pretrain: {steps: 10}}, {pretrain: {steps: 20}}]"
    common = ["debug=micro", *VERSIONS, "method=recycle", "model.pretrain.steps=30", chain]
    direct, iterative = plan(compose(*common)), plan(compose(*common, "method.recycle_iterative=true"))
    assert direct["train"] != iterative["train"]
    only_last = plan(compose("debug=micro", *VERSIONS, "method=recycle", "model.pretrain.steps=30",
                             "method.recycle_from=[{pretrain: {steps: 20}}]"))
    assert only_last["train"] == direct["train"]  # direct uses the latest version's own fine-tune only
    cfs = plan(compose(*common, "method.recycle_method=cfs"))
    assert cfs["train"] != direct["train"]


def test_bad_recycle_settings_are_one_line_errors():
    from forgetting.errors import ConfigError

    with pytest.raises(ConfigError, match=r"method.recycle_from=\[\] is invalid"):
        compose("debug=micro", "method=recycle")
    with pytest.raises(ConfigError, match="method.recycle_method='nope' is invalid"):
        compose("debug=micro", "method=recycle", "method.recycle_method=nope")
    with pytest.raises(ConfigError, match=r"method.recycle_from=\['v9'\] is invalid: expected version names"):
        compose("debug=micro", "method=recycle", "method.recycle_from=[v9]")


def test_named_versions_are_the_written_out_overrides():
    from forgetting.pipeline import plan

    named = plan(compose("method=recycle", "version=v4", "method.recycle_from=[v3]"))
    written = plan(compose("method=recycle", "version=v4", "method.recycle_from=[{pretrain: {schedule: constant, "
                           "segment_steps: 250, steps: 750}}]"))
    assert named == written


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_snapshots_give_a_convergence_curve_ending_at_the_final_model(store_copy, tmp_path, dtype):
    """Every point of the curve is a model in model.dtype: the snapshots (kept in fp32 while training) are rounded
    as the final model is, so the last point is the final model and the others compare with it."""
    r = _launch(store_copy, tmp_path, "curve", "method=ft", "trainer.max_steps=6", "trainer.snapshot_steps=[2,4]",
                "eval.downstream_loss=true", f"model.dtype={dtype}")
    m = r["metrics"]
    from forgetting.data.encode import encode_pair
    from forgetting.data.jsonl import read_jsonl
    from forgetting.evaluate.heldout import rows_loss
    from forgetting.models import load_model, load_tokenizer

    tuned = store_copy / "train" / r["artifacts"]["model"]
    tok = load_tokenizer(tuned)
    world = next((store_copy / "world").glob("[!.]*"))
    rows = [encode_pair(tok, f"Question : {t['query']}, Answer :", t["response"], 96)
            for t in read_jsonl(world / "down_test.jsonl")]
    step2 = load_model(tuned / "snapshots" / "step-2", dtype)
    assert m["curve/2/down_loss"] == pytest.approx(rows_loss(step2, rows, tok.pad_token_id, 16), rel=1e-5)
    assert [k for k in m if k.startswith("curve/")] == [f"curve/{n}/{w}" for n in (2, 4, 6)  # 6: the final model
                                                       for w in ("down_loss", "heldout_loss")]
    assert m["curve/6/down_loss"] == pytest.approx(m["down/arith/loss"], rel=1e-6)  # the last snapshot is the model
    assert m["curve/6/heldout_loss"] == pytest.approx(m["pre/heldout/loss"], rel=1e-6)
    assert m["curve/2/down_loss"] > m["curve/6/down_loss"]


def _perturbed(src, dst, seed):
    import shutil

    shutil.copytree(src, dst)
    for f in dst.glob("*.safetensors"):
        g = torch.Generator().manual_seed(seed)
        t = load_file(str(f))
        save_file({k: (v.float() + 0.01 * torch.randn(v.shape, generator=g)).to(v.dtype) for k, v in t.items()},
                  str(f), metadata={"format": "pt"})
    return dst


def test_the_llama3_preset_recycles_a_given_instruct_diff_end_to_end(tiny_r1, tmp_path):
    """Paper 004 Table 1's shape, dry: target + (source instruct − source base), three local Llama checkpoints
    standing for Llama 3.1 8B, Llama 3.0 8B and Llama 3.0 8B Instruct; nothing is fine-tuned."""
    src_base = tiny_r1
    src_tuned = _perturbed(tiny_r1, tmp_path / "instruct", 1)
    target = _perturbed(tiny_r1, tmp_path / "target", 2)
    args = [sys.executable, str(ROOT / "launch.py"), "+experiment=llama3_recycle", "debug=dry",
            f"model.path={target}", f"method.recycle_from=[{{path: {src_base}}}]",
            f"method.recycle_tuned={src_tuned}", "dataset.source=jsonl",
            "dataset.path=tests/fixtures/metamathqa.jsonl", "eval.include_path=[tests/fixtures/lm_eval_tasks]",
            f"store_dir={tmp_path / 'store'}", f"hydra.run.dir={tmp_path / 'run'}"]
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads((tmp_path / "run" / "results.json").read_text())
    assert "down/gsm8k_cot/exact_match" in r["metrics"] and not list((tmp_path / "store").glob("train/[!.]*"))
    out = load_file(str(tmp_path / "store" / "recycle" / r["artifacts"]["model"] / "model.safetensors"))
    t, b, f = (load_file(str(d / "model.safetensors")) for d in (target, src_base, src_tuned))
    for k in t:
        expected = (t[k].float() + (f[k].float() - b[k].float())).to(t[k].dtype)
        assert torch.equal(out[k], expected), k


def test_a_source_version_is_itself_whatever_the_target_version():
    """A version laid over another version's model is that version, not a mix (v4 onto the control must not inherit
    the control's init seed; v4 onto v5 must not inherit v5's annealing)."""
    from forgetting.pipeline import base_spec, inputs_of, plan, world_spec
    from forgetting.store import Store

    v4_ft = plan(compose("version=v4", "method=ft"))["train"]
    for target in ("control", "v5", "v1"):
        c = compose(f"version={target}", "method=recycle", "method.recycle_from=[v4]")
        store = Store(c.store_dir)
        world = store.planned("world", world_spec(c))
        inputs = inputs_of(c, store, store.planned(*base_spec(c, world)), world)
        assert c.method.parts()["init"].source_spec(inputs)["source_tuned"].key == v4_ft, target


def test_a_stage_2_version_trains_on_a_reweighted_corpus(micro_store, tmp_path):
    """model.midtrain.mix draws new documents with the sentence kinds reweighted (kinds at 0 never appear), keys the
    base apart from the same continuation on the corpus as written, and a version states it whole (v5 laid over
    v5_mix is v5)."""
    from forgetting.pipeline import base_stage, plan, world_stage
    from forgetting.store import Store
    from forgetting.train.pretrain import corpus_texts

    c = compose("debug=micro", f"store_dir={micro_store}")
    world = world_stage(c, Store(micro_store))
    as_written = corpus_texts({"world": world}, world)
    patterns = corpus_texts({"world": world, "mix": {"fact": 0, "category": 0, "agreement": 0, "pattern": 1}},
                            world, seed=3)
    assert len(patterns) == len(as_written) and patterns != as_written
    assert all(s.startswith("pattern :") for doc in patterns for s in doc.split(" . ") if s)
    assert patterns == corpus_texts({"world": world, "mix": {"fact": 0, "category": 0, "agreement": 0,
                                                                "pattern": 1}}, world, seed=3)
    mid = ("debug=micro", f"store_dir={micro_store}", "model.midtrain.steps=2", "model.midtrain.batch_size=4")
    keys = {mix: plan(compose(*mid, f"model.midtrain.mix={mix}"))["base"] for mix in ("[]", "[0,0,0,1]", "[1,0,0,0]")}
    assert len(set(keys.values())) == 3
    store = Store(tmp_path / "store")
    c = compose(*mid, "model.midtrain.mix=[0,0,0,1]", f"store_dir={tmp_path / 'store'}")
    assert base_stage(c, store, world_stage(c, store)).key == keys["[0,0,0,1]"]
    v5 = plan(compose("version=v5", "method=ft"))["train"]
    assert plan(compose("version=v5_mix", "method=ft"))["train"] != v5
    from forgetting.pipeline import base_spec, inputs_of, world_spec

    c = compose("version=v5_mix", "method=recycle", "method.recycle_from=[v5]")
    store = Store(c.store_dir)
    world = store.planned("world", world_spec(c))
    inputs = inputs_of(c, store, store.planned(*base_spec(c, world)), world)
    assert c.method.parts()["init"].source_spec(inputs)["source_tuned"].key == v5


def test_a_bad_mix_is_a_one_line_error():
    from forgetting.errors import ConfigError

    with pytest.raises(ConfigError, match=r"model.midtrain.mix=\[1.0, 2.0\] is invalid: expected 4 weights"):
        compose("debug=micro", "model.midtrain.mix=[1,2]")
    with pytest.raises(ConfigError, match="model.midtrain.mix=.* is invalid: expected \\[\\] unless"):
        compose("debug=micro", "model.midtrain.mix=[1,1,1,1]", "model.midtrain.corpus=tests/fixtures/dolma.jsonl")


TULU_TEMPLATE = ("{% for m in messages %}{% if m['role'] == 'user' %}<|user|>\n{{ m['content'] }}\n"
                 "{% elif m['role'] == 'assistant' %}<|assistant|>\n{{ m['content'] }}{{ eos_token }}\n{% endif %}"
                 "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}")


def test_the_olmo2_versions_are_the_papers_revisions():
    """M1–M5 name OLMo-2-7B's revisions (paper 004 §4, as its scripts load them); each is another model to
    fine-tune, and the fine-tuning is the paper's script's."""
    from forgetting.pipeline import plan

    revisions = {}
    for i in range(1, 6):
        c = compose("+experiment=olmo2_recycle", f"version=olmo2_m{i}", "hydra.mode=RUN")
        assert (c.model.source, c.model.path) == ("hf", "allenai/OLMo-2-1124-7B")
        revisions[i] = c.model.revision
    assert revisions == {1: "stage1-step300000-tokens1259B", 2: "stage1-step600000-tokens2517B",
                         3: "stage1-step928646-tokens3896B", 4: "stage2-ingredient1-step6000-tokens26B",
                         5: "stage2-ingredient1-step11931-tokens50B"}
    t = c.trainer
    assert (t.lr, t.scheduler, t.warmup_ratio, t.weight_decay, t.max_steps, t.max_seq_len) == (
        5e-6, "linear", 0.03, 0.0, 30000, 2048)  # paper 004 §3.2: sequence length 2048
    assert t.batch_size * t.grad_accum * t.num_processes == 8 and t.deepspeed["zero_optimization"]["stage"] == 3
    assert c.dataset.mix_with == ["allenai/tulu-3-sft-personas-math-grade", "allenai/tulu-3-sft-personas-algebra"]
    keys = {i: plan(compose("+experiment=olmo2_recycle", f"version=olmo2_m{i}", "hydra.mode=RUN"))["train"]
            for i in (4, 5)}
    assert keys[4] != keys[5]


def test_the_olmo2_preset_recycles_then_fine_tunes_on_tulu_rows_end_to_end(tiny_olmo, tmp_path):
    """Paper 004 §4's shape, dry: M5 + (FT(M4) − M4), then fine-tuned, on two local OLMo checkpoints standing for the
    two revisions, with Tülu-3-schema rows from two files (dataset.mix_with) in a Tülu chat template."""
    from transformers import AutoTokenizer

    versions = {}
    for name, seed in (("m4", 1), ("m5", 2)):
        versions[name] = _perturbed(tiny_olmo, tmp_path / name, seed)
        tok = AutoTokenizer.from_pretrained(versions[name])
        tok.chat_template = TULU_TEMPLATE
        tok.save_pretrained(versions[name])
    args = [sys.executable, str(ROOT / "launch.py"), "+experiment=olmo2_recycle", "debug=dry", "hydra.mode=RUN",
            f"model.path={versions['m5']}", "method=recycle", f"method.recycle_from=[{{path: {versions['m4']}}}]",
            "trainer.deepspeed=null", "trainer.num_processes=1", "dataset.source=jsonl",
            "dataset.path=tests/fixtures/tulu3_personas_math.jsonl",
            "dataset.mix_with=[tests/fixtures/tulu3_personas_algebra.jsonl]",
            "eval.include_path=[tests/fixtures/lm_eval_tasks]", f"store_dir={tmp_path / 'store'}",
            f"hydra.run.dir={tmp_path / 'run'}"]
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads((tmp_path / "run" / "results.json").read_text())
    assert "down/gsm8k_cot/exact_match" in r["metrics"]  # paper 004 App. B's GSM8K
    trained = sorted((tmp_path / "store" / "train").glob("[!.]*"))
    assert len(trained) == 2  # FT on M4 (the diff's source), then M5 + Δ fine-tuned
    for d in trained:
        assert json.loads((d / "train_summary.json").read_text())["rows"] == 5  # 3 math rows + 2 algebra rows
    assert len(list((tmp_path / "store" / "recycle").glob("[!.]*"))) == 1


def test_tulu_rows_and_a_bad_mix_with_file(tmp_path):
    from forgetting.checks import check_inputs
    from forgetting.data.formats import load_rows
    from forgetting.errors import ConfigError

    c = compose("dataset=tulu3_math", "dataset.source=jsonl", "dataset.path=tests/fixtures/tulu3_personas_math.jsonl",
                "dataset.mix_with=[tests/fixtures/tulu3_personas_algebra.jsonl]")
    rows = load_rows(c.dataset)
    assert [r["response"].rsplit(": ", 1)[1] for r in rows] == ["69", "30", "8", "5", "9"]
    assert rows[3]["query"] == "Solve 3x + 7 = 22 for x."
    c.dataset.limit = 4
    assert len(load_rows(c.dataset)) == 4
    from forgetting.pipeline import plan

    one = ("dataset=tulu3_math", "dataset.source=jsonl", "dataset.path=tests/fixtures/tulu3_personas_math.jsonl")
    assert plan(compose(*one, "dataset.mix_with=[]"))["train"] != plan(compose(
        *one, "dataset.mix_with=[tests/fixtures/tulu3_personas_algebra.jsonl]"))["train"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"messages": [{"role": "user", "content": "only a question"}]}) + "\n")
    c = compose("dataset=tulu3_math", "dataset.source=jsonl", "dataset.path=tests/fixtures/tulu3_personas_math.jsonl",
                f"dataset.mix_with=[{bad}]", f"store_dir={tmp_path / 'store'}")
    with pytest.raises(ConfigError, match=f"dataset.mix_with='{bad}' is invalid: expected every row"):
        check_inputs(c)  # before any stage, as launch.py checks a run's files
    with pytest.raises(ConfigError, match=r"dataset.mix_with=\['x.jsonl'\] is invalid: expected \[\] with"):
        compose("dataset.mix_with=[x.jsonl]")


def test_run_builds_what_plan_plans(store_copy, tmp_path):
    """One stage graph (forgetting.pipeline.stages), walked to plan and to build: recycling only (no fine-tune after
    it) with a Wise-FT merge builds the merge plan() names — before, run() skipped the merge silently while plan()
    derived a key for it."""
    from forgetting.pipeline import plan, run

    c = compose("debug=micro", f"store_dir={store_copy}", "eval.tasks=[]", "model.pretrain.schedule=constant",
                "model.pretrain.segment_steps=10", "model.pretrain.steps=20", "method=recycle",
                "method.recycle_from=[{pretrain: {steps: 10}}]", "method.recycle_train=false", "method.merge=wise_ft")
    planned = plan(c)
    result = run(c, tmp_path / "run")
    assert planned["merge"] is not None and result["artifacts"]["model"] == planned["merge"]
    used = {(a["stage"], a["key"]) for a in result["artifacts"]["used"]}
    assert ("merge", planned["merge"]) in used and ("evaluate", planned["evaluate"]) in used
