"""DeepSpeed ZeRO-3 (``trainer=deepspeed_zero3``) on CPU: 2 processes train the micro model with ℓ2 as one process
does, each holding the anchor of its own shard, resume with the original anchors, and save a plain checkpoint (the
16-bit weights gathered at save, or the ZeRO shards gathered after training); LoRA under 1-process ZeRO-3 through the
pipeline.

    pytest tests/train/test_zero3.py

Each ZeRO-3 run starts its processes with torchrun (gloo, DS_ACCELERATOR=cpu, a free port): 30–50 s apiece here.
"""
from __future__ import annotations

import json
import shutil
from functools import partial

import pytest
import torch
from conftest import compose

from forgetting.data.datasets import load_downstream
from forgetting.pipeline import base_stage, train_stage, trainable_model, world_stage
from forgetting.runtime import encode_example, load
from forgetting.store import Store
from forgetting.train.trainer import train

LAMBDA = 1.0
STEPS = 8
# a micro run of ℓ2 with a fixed step count, logged at every step
COMMON = ("debug=micro", "method=l2", f"method.l2_lambda={LAMBDA}", "trainer.lr=3e-3", f"trainer.max_steps={STEPS}",
          "trainer.logging_steps=1", "trainer.save_steps=4")
# the same on 2 CPU processes under ZeRO-3: 2 × 4 rows per step, as 1 × 8 in one process
ZERO3 = ("trainer=deepspeed_zero3", "trainer.num_processes=2", "trainer.batch_size=4", "trainer.grad_accum=1",
         "trainer.bf16=false")
# the ZeRO shards are saved and gathered into the checkpoint after training (the resumed run gathers at save)
GATHER_OFF = "trainer.deepspeed.zero_optimization.stage3_gather_16bit_weights_on_model_save=false"
# float summation order is all that differs between the runs (gradients reduce-scattered over 2 ranks, rows padded
# per rank): measured here ≤ 1e-7 relative over 8 steps. Dropping the ℓ2 term or logging one rank's shard (about half
# the penalty) moves these numbers by > 1e-2 (checked against the FT run below).
RTOL = 1e-4


def _run(store_root, out, work, *overrides, method=None):
    """train() as the pipeline's train stage calls it, but with a work dir that outlives the run (its checkpoints
    are inspected below); the loss and ℓ2 curves by step."""
    c = compose(*COMMON, f"store_dir={store_root}", *overrides, *(method or ()))
    store = Store(store_root)
    world = world_stage(c, store)
    base = base_stage(c, store, world)
    _, tok = load(c, base)
    rows = [encode_example(tok, c, r["query"], r["response"]) for r in load_downstream(c.dataset, world)]
    parts = c.method.parts()
    summary = train(partial(trainable_model, c, base), tok, rows, out, work, c.trainer, steps=c.trainer.max_steps,
                    seed=c.seed, hooks=[parts["optimizer"], parts["regularizer"]])
    log = [json.loads(line) for line in open(out / "train_log.jsonl")]
    return {"summary": summary, "out": out, "work": work, "base": base.path, "c": c,
            "loss": {e["step"]: e["loss"] for e in log if "loss" in e},
            "l2": {e["step"]: e["l2"] for e in log if "l2" in e}}


@pytest.fixture(scope="module")
def runs(micro_store, tmp_path_factory):
    root = tmp_path_factory.mktemp("zero3")
    shutil.copytree(micro_store, root / "store")
    return {"one": _run(root / "store", root / "one", root / "one_work"),
            "ft": _run(root / "store", root / "ft", root / "ft_work", method=("method=ft",)),
            "zero3": _run(root / "store", root / "zero3", root / "zero3_work", *ZERO3, GATHER_OFF)}


def _params(path) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForCausalLM

    return {k: v.detach() for k, v in AutoModelForCausalLM.from_pretrained(str(path)).named_parameters()}


def test_config_is_zero3_on_two_processes(runs):
    c = runs["zero3"]["c"]
    assert c.trainer.deepspeed["zero_optimization"]["stage"] == 3 and c.trainer.num_processes == 2
    assert c.trainer.gradient_checkpointing  # the 8B setting, kept on here
    assert c.trainer.deepspeed["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is False
    assert runs["zero3"]["summary"]["processes"] == 2 and runs["zero3"]["summary"]["steps"] == STEPS


def test_two_zero3_processes_follow_the_one_process_loss_and_l2_curves(runs):
    one, z3, ft = runs["one"], runs["zero3"], runs["ft"]
    steps = list(range(1, STEPS + 1))
    assert sorted(one["loss"]) == sorted(z3["loss"]) == sorted(one["l2"]) == sorted(z3["l2"]) == steps
    assert one["loss"][STEPS] < one["loss"][1] and z3["loss"][STEPS] < z3["loss"][1]  # both learn
    for s in steps:
        assert z3["loss"][s] == pytest.approx(one["loss"][s], rel=RTOL), (s, z3["loss"], one["loss"])
        assert z3["l2"][s] == pytest.approx(one["l2"][s], rel=RTOL), (s, z3["l2"], one["l2"])
    # the comparison can tell: without the penalty the same data gives another curve
    assert max(abs(ft["loss"][s] - one["loss"][s]) / one["loss"][s] for s in steps[1:]) > 100 * RTOL
    assert not ft["l2"]


def test_the_logged_penalty_is_lambda_times_the_squared_distance_of_the_saved_weights(runs):
    for name in ("one", "zero3"):
        run = runs[name]
        tuned, base = _params(run["out"]), _params(run["base"])
        distance = sum(float((tuned[k] - base[k]).pow(2).sum()) for k in base)
        assert distance > 0
        assert run["l2"][STEPS] == pytest.approx(LAMBDA * distance, rel=1e-4), name


def test_each_rank_holds_the_anchor_of_its_own_shard(runs):
    """In the last ZeRO checkpoint each rank's optimizer state holds its flat fp32 partition with the anchor beside
    it; the two halves together are the whole model, and Σ_ranks λ‖shard − anchor‖² is the logged penalty."""
    shards = sorted((runs["zero3"]["work"] / f"checkpoint-{STEPS}").glob("global_step*/*optim_states.pt"))
    assert [p.name.split("_mp_")[0] for p in shards] == ["zero_pp_rank_0", "zero_pp_rank_1"]
    total, numel = 0.0, []
    for path in shards:
        sd = torch.load(path, map_location="cpu", weights_only=False)["optimizer_state_dict"]
        assert sd["partition_count"] == 2
        flat, state = sd["fp32_flat_groups"], sd["optimizer_state_dict"]["state"]
        assert len(state) == len(flat)
        for i, weights in enumerate(flat):
            anchor = state[i]["l2_anchor"]
            assert anchor.shape == weights.shape and {"exp_avg", "exp_avg_sq", "step"} <= set(state[i])
            total += float((weights - anchor).pow(2).sum())
        numel.append(sum(t.numel() for t in flat))
    n_params = sum(v.numel() for v in _params(runs["zero3"]["base"]).values())
    assert numel[0] == numel[1] and n_params <= sum(numel) < n_params + 2 * 64  # halves, padded for alignment
    assert LAMBDA * total == pytest.approx(runs["zero3"]["l2"][STEPS], rel=1e-5)


def test_a_resumed_zero3_run_keeps_the_original_anchors(runs, tmp_path):
    """Restarted from its step-4 checkpoint, the 2-process run continues with the base weights as anchors (DeepSpeed
    restores each rank's optimizer state): its penalty from step 5 on is the uninterrupted run's. Re-anchored to the
    step-4 weights, it would log λ‖θ − θ₄‖² instead, and pull toward θ₄. This run gathers the 16-bit weights at save
    (the preset's default): its checkpoint has the uninterrupted run's weights."""
    z3 = runs["zero3"]
    shutil.copytree(z3["work"] / "checkpoint-4", tmp_path / "work" / "checkpoint-4")
    resumed = _run(z3["c"].store_dir, tmp_path / "out", tmp_path / "work", *ZERO3)
    assert resumed["summary"]["resumed_from"].endswith("checkpoint-4") and resumed["summary"]["steps"] == STEPS
    for s in range(5, STEPS + 1):
        assert resumed["l2"][s] == pytest.approx(z3["l2"][s], rel=RTOL), (s, resumed["l2"], z3["l2"])
    files = {p.name for p in resumed["out"].iterdir()}
    assert "model.safetensors" in files and not {f for f in files if f.startswith(("global_step", "latest"))}
    gathered, sharded = _params(resumed["out"]), _params(z3["out"])
    assert gathered.keys() == sharded.keys()
    for k in sharded:
        assert torch.allclose(gathered[k], sharded[k], rtol=0, atol=1e-5), k


def test_the_saved_checkpoint_is_a_plain_model_with_the_one_process_weights(runs):
    z3 = _params(runs["zero3"]["out"])
    one, base = _params(runs["one"]["out"]), _params(runs["zero3"]["base"])
    assert {k: v.shape for k, v in z3.items()} == {k: v.shape for k, v in base.items()}
    assert all(v.dtype == torch.float32 for v in z3.values())
    assert all(not torch.equal(z3[k], base[k]) for k in base)  # every tensor trained
    for k in base:
        assert torch.allclose(z3[k], one[k], rtol=0, atol=1e-5), k
    leftovers = ("global_step", "latest", "zero_to_fp32", "adapter")
    assert not [p for p in runs["zero3"]["out"].iterdir() if p.name.startswith(leftovers)]


def test_lora_under_one_process_zero3(micro_store, tmp_path):
    """Through the pipeline (trainer=deepspeed_zero3 on 1 process): rank 0 saves the gathered adapter, which is
    merged into the base weights after training, as in one process without DeepSpeed."""
    from safetensors.torch import load_file

    store_root = tmp_path / "store"
    shutil.copytree(micro_store, store_root)
    c = compose(*COMMON, f"store_dir={store_root}", "trainer=deepspeed_zero3", "trainer.bf16=false",
                "trainer.grad_accum=1", "trainer.max_steps=4", "method.adapter=lora", "method.lora_rank=4",
                "trainer.lr=1e-2")
    store = Store(store_root)
    world = world_stage(c, store)
    base = base_stage(c, store, world)
    tuned = train_stage(c, store, base, world)
    summary = json.loads((tuned.path / "train_summary.json").read_text())
    assert summary["steps"] == 4 and summary["processes"] == 1
    files = {p.name for p in tuned.path.iterdir()}
    assert "model.safetensors" in files
    assert not {f for f in files if f.startswith(("global_step", "adapter", "latest", "README", "zero_to"))}
    saved, base_sd = load_file(str(tuned.path / "model.safetensors")), load_file(str(base.path / "model.safetensors"))
    assert set(saved) == set(base_sd)  # no lora_ / base_layer keys
    linears = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    for k in base_sd:
        is_adapted = k.rsplit(".", 2)[-2] in linears
        assert torch.equal(saved[k], base_sd[k]) != is_adapted, k  # adapted linears moved, the rest did not
    log = [json.loads(line) for line in open(tuned.path / "train_log.jsonl")]
    assert [e["step"] for e in log if "l2" in e] == [1, 2, 3, 4] and all(e["l2"] >= 0 for e in log if "l2" in e)
    model, _ = load(c, tuned)  # and the pipeline loads it like any other checkpoint
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in saved.items())


@pytest.mark.parametrize("override,needle", [
    ("+trainer.deepspeed.optimizer.type=AdamW", "trainer.deepspeed.optimizer="),
    ("+trainer.deepspeed.scheduler.type=WarmupLR", "trainer.deepspeed.scheduler="),
    ("trainer.deepspeed.zero_optimization.stage=4", "trainer.deepspeed.zero_optimization.stage=4"),
    ("trainer.deepspeed.zero_optimization.offload_param.device=gpu",
     "trainer.deepspeed.zero_optimization.offload_param.device='gpu'"),
    ("trainer.deepspeed.zero_optimization.stage3_gather_16bit_weights_on_model_save=maybe",
     "stage3_gather_16bit_weights_on_model_save='maybe'"),
    ("trainer.deepspeed.train_micro_batch_size_per_gpu=2", "trainer.deepspeed.train_micro_batch_size_per_gpu=2"),
    ("trainer.deepspeed.bf16.enabled=false", "trainer.deepspeed.bf16.enabled=False"),
    ("trainer.num_processes=0", "trainer.num_processes=0"),
])
def test_bad_deepspeed_settings_fail_at_compose_time_in_one_line(override, needle):
    from forgetting.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        compose("trainer=deepspeed_zero3", override)
    message = str(err.value)
    assert needle in message and "expected" in message and "\n" not in message


def test_the_preset_is_the_paper_r1_setting_and_fills_autos_from_the_trainer():
    c = compose("trainer=deepspeed_zero3").trainer
    assert (c.lr, c.epochs, c.batch_size, c.grad_accum, c.max_seq_len, c.bf16, c.gradient_checkpointing) == \
        (5e-6, 4.0, 4, 32, 1024, True, True)
    ds, zero = c.deepspeed, c.deepspeed["zero_optimization"]
    assert zero["stage"] == 3 and zero["stage3_gather_16bit_weights_on_model_save"] is True
    assert {ds[k] for k in ("train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "train_batch_size",
                            "gradient_clipping")} == {"auto"} and ds["bf16"]["enabled"] == "auto"
    assert {zero[k]["device"] for k in ("offload_optimizer", "offload_param")} == {"none"}


def test_distributed_training_needs_a_function_that_creates_the_model(micro_store, tmp_path):
    from forgetting.train.distributed import launch

    c = compose("debug=micro", f"store_dir={micro_store}")
    model, _ = load(c, base_stage(c, Store(micro_store), world_stage(c, Store(micro_store))))
    with pytest.raises(TypeError, match="expected a picklable function"):
        launch(model, [], 0, tmp_path / "out", tmp_path / "work", 2, {"use_cpu": True})
