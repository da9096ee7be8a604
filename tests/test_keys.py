"""Stage keys are derived from what each stage reads: every config leaf, changed alone, changes the train and
evaluate keys exactly when that stage consumes it (``forgetting.pipeline.plan``: no stage runs here).

    pytest tests/test_keys.py

The table below is this test's own statement of what each stage reads; a leaf missing from it fails the test,
so a new config key must be placed in it.
"""
from __future__ import annotations

import pytest
from conftest import ROOT, compose
from omegaconf import DictConfig, OmegaConf

from forgetting.config import StartToken
from forgetting.pipeline import plan

METHODS = ["base", "ft", "cfs", "cs", "replay", "lora", "l2", "wise_ft", "sam", "ewc"]
TRAINED = set(METHODS) - {"base"}

# how each leaf is perturbed (a valid value other than micro's) and what reads it:
#   "base": the base model (so every trained model and every evaluation); "train": every trained model;
#   "eval": every evaluation; "eval-trained": the evaluation of every trained model;
#   a set of methods: those methods' trained models; "merge": the Wise-FT merge;
#   "none": nothing stored; "skip": not changed alone here, with the reason
FIXTURES = str(ROOT / "tests" / "fixtures" / "lm_eval_tasks")
LEAVES: dict[str, tuple] = {
    **{f"world.{k}": (v, "base") for k, v in dict(seed=1, n_entities=9, n_docs=301, n_heldout_docs=21, n_eval=17,
                                                  n_down_train=65, n_down_test=9, max_operand=6,
                                                  vocab_size=321).items()},
    "world.name": ("other", "none"),
    "model.name": ("other", "none"),
    "model.source": (None, "skip: selects another kind of model (tests/test_gguf.py, test_olmo_presets.py)"),
    "model.path": (None, "skip: only with model.source hf or gguf"),
    "model.revision": (None, "skip: only with model.source hf"),
    "model.dtype": ("bfloat16", "base"),
    "model.trust_remote_code": (True, "none"),
    "model.bos_token": ("<s>", {"cfs"}),
    "model.bos_token_id": (3, {"cfs"}),
    **{f"model.arch.{k}": (v, "base") for k, v in dict(hidden_size=64, num_layers=3, num_heads=4,
                                                       intermediate_size=96, max_position_embeddings=256).items()},
    **{f"model.pretrain.{k}": (v, "base") for k, v in dict(steps=21, batch_size=8, lr=1e-3, warmup_ratio=0.1,
                                                           seq_len=64, weight_decay=0.0, schedule="wsd", rho=0.05,
                                                           seed=7, adam_beta2=0.95).items()},
    "model.midtrain.steps": (3, "base"),
    **{f"model.midtrain.{k}": (v, "none") for k, v in dict(  # read only with steps > 0 (tests/train/test_sam.py)
        lr=1e-3, scheduler="cosine", warmup_ratio=0.1, rho=0.05, batch_size=8, grad_accum=2, seq_len=64,
        weight_decay=0.1, bf16=True, corpus_limit=5, seed=3, max_steps=4, adam_beta2=0.95).items()},
    "model.midtrain.mix": ([1, 3, 3, 3], "none"),  # read only with steps > 0 (tests/merge/test_diff.py)
    **{f"model.midtrain.{k}": (v, "none") for k, v in dict(  # read only with steps > 0 (tests/data/test_stream.py)
        packing=False, num_processes=2, deepspeed={"zero_optimization": {"stage": 2}}).items()},
    "model.midtrain.corpus": (None, "skip: a file, read only with steps > 0 (tests/test_olmo_presets.py)"),
    "model.pretrain.decay_ratio": (0.2, "none"),  # read by schedule=wsd only (tests/train/test_sam.py)
    "model.pretrain.decay_floor": (0.0, "none"),  # read by schedule=wsd only (tests/train/test_sam.py)
    "model.pretrain.segment_steps": (None, "skip: with schedule constant only (tests/merge/test_diff.py)"),
    "model.pretrain.sam_phase": (None, "skip: only with schedule wsd and rho > 0 (tests/train/test_sam.py)"),
    "model.pretrain.per_run_seed": (True, "none"),  # at seed 0 the same base (test_per_run_seed_replicates_the_base)
    # the architecture --plan reads when no config.json is at hand (tests/test_plan.py): no stage reads it
    **{f"model.card.{k}": (v, "none") for k, v in dict(
        num_layers=2, hidden_size=64, num_heads=2, num_kv_heads=1, intermediate_size=128, vocab_size=500,
        tied_embeddings=True, max_position_embeddings=256, params=10**6).items()},
    "method.name": ("other", "none"),
    "method.label": ("other", "none"),
    "method.train": (None, "skip: structural (the base preset)"),
    **{f"method.{k}": (None, "skip: picks a part (every preset's key is checked)") for k in
       ("init", "augment", "adapter", "regularizer", "optimizer", "merge")},
    **{f"method.{k}": (None, "skip: read by method=recycle only (tests/merge/test_diff.py)") for k in
       ("recycle_from", "recycle_scale", "recycle_iterative", "recycle_train", "recycle_method", "recycle_tuned")},
    "method.ratio": (0.5, {"cfs", "cs", "replay"}),
    "method.starts": ([StartToken(token="</s>")], {"cfs"}),  # and the KL's samples (tests/generate/)
    "method.weight": (0.5, {"cfs", "cs", "replay"}),
    "method.l2_lambda": (0.01, {"l2"}),
    "method.rho": (0.1, {"sam"}),
    "method.ewc_lambda": (1e3, {"ewc"}),
    "method.fisher_batches": (7, {"ewc"}),
    "method.lora_rank": (9, {"lora"}),
    "method.lora_alpha": (16.0, {"lora"}),
    "method.alpha": (0.25, "merge"),
    "dataset.name": ("other", "none"),
    "dataset.source": (None, "skip: selects another dataset (tests/test_byo.py)"),
    "dataset.path": (None, "skip: only with dataset.source hf or jsonl"),
    "dataset.mix_with": (None, "skip: only with dataset.source hf or jsonl (tests/merge/test_diff.py)"),
    "dataset.subset": ("x", "none"),
    "dataset.split": ("validation", "none"),
    "dataset.limit": (32, "train"),
    "dataset.format": ("chat", "train"),
    "dataset.prompt_template": ("Q: {query} A:", "train+eval"),
    "dataset.query_field": ("q", "none"),
    "dataset.response_field": ("r", "none"),
    "dataset.builder": ("medreason", "none"),
    "dataset.test_path": (None, "skip: only with dataset.source jsonl (tests/test_byo.py)"),
    "dataset.test_split": (None, "skip: only with a hub dataset"),
    "dataset.answer_pattern": ("(\\d+)", "none"),
    **{f"dataset.{k}": (None, "skip: only with dataset.source hf or jsonl (tests/data/test_validation_rows.py)")
       for k in ("validation_path", "validation_split", "validation_rows")},
    "dataset.n_rows": (1000, "none"),  # --plan's step count when the rows are not local (tests/test_plan.py)
    "eval.name": ("other", "none"),
    "eval.tasks": (["toy_facts"], "eval"),
    "eval.downstream": ([], "eval"),
    "eval.groups": ({"g": ["toy_facts"]}, "eval"),
    "eval.fewshot": ({"toy_facts": 1}, "eval"),
    "eval.generative": (None, "skip: benchmark entries (tests/test_r1_table5.py)"),
    "eval.metrics": ({"toy_arith": "exact_match"}, "eval"),
    "eval.num_fewshot": (1, "eval"),
    "eval.limit": (4, "eval"),
    "eval.batch_size": (8, "eval"),
    "eval.heldout_loss": (False, "eval"),
    "eval.max_gen_toks": (8, "eval"),
    "eval.hflm": ({}, "eval"),
    "eval.corpora": (["stdlib_prose"], "eval"),
    "eval.corpus_docs": (8, "none"),  # no corpora
    "eval.corpus_max_len": (64, "none"),
    "eval.base_samples": (4, "eval"),
    "eval.base_samples_starts": ([StartToken()], "none"),  # no base samples (tests/generate/test_starts.py)
    "eval.downstream_loss": (True, "eval"),
    "eval.robust_noise": ([0.01], "eval"),
    "eval.robust_seeds": (2, "none"),  # read only with robust_noise set (tests/evaluate/test_robust.py)
    "eval.robust_nf4": (True, "eval"),
    "eval.sharpness": (True, "eval-trained"),
    "eval.sharpness_docs": (8, "none"),  # read only with sharpness on (tests/evaluate/test_sharpness.py)
    "eval.generative_limit": (2, "none"),  # no generative benchmarks
    "eval.generative_max_new_tokens": (8, "none"),
    "eval.benchmark_dir": (None, "skip: only with generative benchmarks"),
    "eval.include_path": ([FIXTURES], "eval"),
    "eval.generative_from": (["medical"], "eval"),
    "eval.gen_kwargs": ({"max_gen_toks": 4}, "eval"),
    "eval.apply_chat_template": (True, "eval"),
    "eval.fewshot_as_multiturn": (True, "none"),  # read only with the chat template on (tests/test_suites.py)
    "generator.backend": (None, "skip: test_vllm_dtype_and_bos_token_change_the_cfs_model below"),
    "generator.temperature": (0.6, {"cfs"}),
    "generator.contextual_temperature": (0.9, {"cs"}),
    "generator.top_p": (0.9, {"cfs", "cs"}),
    "generator.max_new_tokens": (12, {"cfs", "cs"}),
    "generator.batch_size": (8, {"cfs", "cs"}),  # hf: rows are sampled batch by batch
    "generator.chunk": (8, {"cfs", "cs"}),
    "generator.seed": (1, {"cfs", "cs", "replay"}),
    **{f"generator.{k}": (v, "none") for k, v in dict(
        tensor_parallel_size=2, data_parallel_size=2, gpu_memory_utilization=0.5, max_model_len=256,
        kv_cache_memory_bytes=10**9, enforce_eager=True, dtype="bfloat16").items()},  # hf: resources; no dtype
    "replay.source": (None, "skip: selects another corpus (tests/data/test_replay.py)"),
    "replay.path": (None, "skip: only with replay.source hf or jsonl"),
    "replay.subset": ("x", "none"),
    "replay.split": ("validation", "none"),
    "replay.text_field": ("content", {"replay"}),
    "replay.max_rows": (100, {"replay"}),
    "trainer.name": ("other", "none"),
    **{f"trainer.{k}": (v, "train") for k, v in dict(
        lr=1e-3, max_steps=4, batch_size=4, grad_accum=2, warmup_ratio=0.1, scheduler="linear", weight_decay=0.1,
        max_seq_len=64, logging_steps=1, bf16=True, gradient_checkpointing=True, packing=True,
        num_processes=2).items()},
    "trainer.snapshot_steps": ([2], "train"),
    "trainer.scheduler_kwargs": ({"num_cycles": 0.4}, "train"),
    "trainer.epochs": (3.0, "none"),  # debug=micro sets max_steps
    "trainer.step_cap": (1, "train"),  # caps max_steps (debug=dry: a preset that sets its own steps)
    "trainer.adam_beta2": (0.95, "train"),
    "trainer.save_steps": (5, "none"),
    "trainer.deepspeed": (None, "skip: tests/train/test_zero3.py"),
    **{f"logger.{k}": (v, "none") for k, v in dict(
        name="wandb", project="p", entity="e", group="g", mode="offline", tags=["t"], log_samples=0,
        init_timeout=5.0, finish_timeout=0.0).items()},
    "seed": (1, "train"),
    "store_dir": ("/tmp/elsewhere", "none"),
    "device": ("cuda", "none"),
    "label": ("mine", "none"),
    "plan.device": ("a100_40gb", "none"),  # what --plan estimates on (tests/test_plan.py)
    "plan.mfu": (0.5, "none"),
}


def leaves(node: DictConfig, prefix: str = ""):
    for k in node.keys():
        child = node._get_node(k)
        if isinstance(child, DictConfig) and not child._is_none() and child._metadata.object_type not in (None, dict):
            yield from leaves(child, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}"


def expected(rule, method: str) -> set[str]:
    """The stages whose key the leaf changes for ``method`` (Wise-FT merges whatever model it trained)."""
    stages = _expected(rule, method)
    return stages | {"merge"} if method == "wise_ft" and "train" in stages else stages


def _expected(rule, method: str) -> set[str]:
    trained = method in TRAINED
    if rule == "base":
        return {"train", "evaluate"} if trained else {"evaluate"}
    if rule == "train":
        return {"train", "evaluate"} if trained else set()
    if rule == "train+eval":
        return {"train", "evaluate"} if trained else {"evaluate"}
    if rule == "eval":
        return {"evaluate"}
    if rule == "eval-trained":  # an evaluator of trained models only
        return {"evaluate"} if trained else set()
    if rule == "merge":
        return {"merge", "evaluate"} if method == "wise_ft" else set()
    if isinstance(rule, set):
        return {"train", "evaluate"} if method in rule else set()
    return set()


@pytest.fixture(scope="module")
def configs():
    return {m: OmegaConf.structured(compose("debug=micro", f"method={m}")) for m in METHODS}


def changed(node: DictConfig, key: str, value) -> set[str]:
    before = plan(OmegaConf.to_object(node))
    other = node.copy()
    OmegaConf.update(other, key, value, merge=False)
    after = plan(OmegaConf.to_object(other))
    return {stage for stage in ("train", "merge", "evaluate") if before[stage] != after[stage]}


def test_every_leaf_is_in_the_table(configs):
    missing = [k for k in leaves(configs["cfs"]) if k not in LEAVES]
    assert not missing, f"config leaves with no row in LEAVES (what reads them?): {missing}"
    assert not set(LEAVES) - set(leaves(configs["cfs"])), "rows for leaves the config no longer has"


@pytest.mark.parametrize("key", [k for k, (_, rule) in LEAVES.items() if not str(rule).startswith("skip")])
def test_a_leaf_changes_the_keys_of_exactly_the_stages_that_read_it(configs, key):
    value, rule = LEAVES[key]
    wrong = {}
    for method, node in configs.items():
        got, want = changed(node, key, value), expected(rule, method)
        if got != want:
            wrong[method] = f"changed {sorted(got)}, expected {sorted(want)}"
    assert not wrong, f"{key}={value!r}: {wrong}"


def test_ft_trains_once_in_a_ratio_or_temperature_sweep():
    ft = {plan(compose("debug=micro", "method=ft", o))["train"] for o in
          ("method.ratio=2.0", "method.ratio=0.1", "generator.temperature=0.6", "generator.top_p=1.0")}
    cfs = {plan(compose("debug=micro", "method=cfs", o))["train"] for o in ("method.ratio=2.0", "method.ratio=0.1")}
    assert len(ft) == 1 and len(cfs) == 2


def test_per_run_seed_replicates_the_base():
    """seed=0,1,2 shares one base unless model.pretrain.per_run_seed; then each seed has its own, and seed 0's is
    the shared one (so a seed-0 sweep already run is reused)."""
    bases = {(per, s): plan(compose("debug=micro", "method=ft", f"seed={s}", f"model.pretrain.per_run_seed={per}"))
             for per in (False, True) for s in (0, 1, 2)}
    assert len({bases[False, s]["base"] for s in (0, 1, 2)}) == 1
    assert len({bases[True, s]["base"] for s in (0, 1, 2)}) == 3
    assert bases[True, 0] == bases[False, 0]


def test_olmo_table3_ft_is_olmo_table2_ft(tiny_olmo):
    """olmo_table3 sets lora_rank 256 for every method; FT does not read it, so both tables share FT's model."""
    common = ("debug=dry", f"model.path={tiny_olmo}", "dataset.source=jsonl",
              f"dataset.path={ROOT / 'tests/fixtures/metamathqa.jsonl'}", "method=ft")
    t2 = compose("+experiment=olmo_table2", *common, f"replay.path={ROOT / 'tests/fixtures/dolma.jsonl'}")
    t3 = compose("+experiment=olmo_table3", *common)
    assert t3.method.lora_rank == 256 and t2.method.lora_rank != 256
    assert plan(t2)["train"] == plan(t3)["train"]


def test_vllm_dtype_and_bos_token_change_the_cfs_model():
    vllm = ("debug=micro", "method=cfs", "generator=vllm")
    keys = {plan(compose(*vllm, *o))["train"] for o in
            ((), ("generator.dtype=bfloat16",), ("model.bos_token='<s>'",), ("model.bos_token_id=3",))}
    assert len(keys) == 4
    # null generator.dtype means model.dtype: the same samples, the same model
    assert plan(compose(*vllm))["train"] == plan(compose(*vllm, "generator.dtype=float32"))["train"]
