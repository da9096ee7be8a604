"""The plan before compute (forgetting/plan.py, forgetting/estimate.py): ``launch.py --plan`` lists the stages a run
would build with the keys the run builds, estimates memory and time offline, refuses a run that does not fit before
writing anything, and the estimate is within its stated tolerance of the peak measured on CPU.

    pytest tests/test_plan.py
    python launch.py +experiment=llama3_recycle device=cuda method.recycle_train=true --plan
"""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import yaml
from conftest import CONF, ROOT, compose

from forgetting.estimate import DEVICES, TOLERANCE, Arch, GiB, TrainSetup, fits, train_memory
from forgetting.pipeline import plan as pipeline_plan
from forgetting.pipeline import run
from forgetting.plan import arch_of, stages, with_overrides
from forgetting.store import Store

H100 = DEVICES["h100_80gb"]
LLAMA3_FT = ("+experiment=llama3_recycle", "device=cuda", "method.recycle_train=true", "dataset=metamathqa")
PRESETS = ["olmo_table2", "r1_table5", "olmo2_sam", "llama3_recycle"]
KEY = re.compile(r"^  (\w+)\s+([0-9a-f]{16}|\?{16})", re.M)


def _step(steps, stage):
    return next(s for s in steps if s.stage == stage)


def _overrides(fix: str) -> dict:
    """``key=value`` pairs of a suggested fix (its estimate, in parentheses, dropped)."""
    return dict(o.split("=", 1) for o in fix.split(" (")[0].split())


def test_the_llama3_fine_tune_does_not_fit_one_80gb_device_and_the_named_fix_does():
    """Finding 9: full fine-tuning of Llama-3-8B with fp32 master weights and no ZeRO-3 needs ~128 GB of model
    states before activations; the fix the plan names fits by its own estimate, keeping the effective batch."""
    c = compose(*LLAMA3_FT)
    train = _step(stages(c, H100), "train")
    e = train.estimate
    states = sum(v for k, v in e.parts.items() if k.startswith(("weights", "optimizer", "gradients")))
    assert 16 * 8.03e9 * 0.99 < states and e.peak > 80 * GiB and train.fit == "does not fit"
    assert "deepspeed=zero3" in train.fix
    fixed = with_overrides(c, _overrides(train.fix))
    t0, t1 = c.trainer, fixed.trainer
    assert t0.batch_size * t0.grad_accum * t0.num_processes == t1.batch_size * t1.grad_accum * t1.num_processes
    assert (t1.lr, t1.max_seq_len, t1.epochs) == (t0.lr, t0.max_seq_len, t0.epochs)  # the same schedule
    after = _step(stages(fixed, H100), "train")
    assert after.fit == "fits" and after.estimate.peak <= 0.75 * H100.memory


def test_the_documented_llama3_command_fits():
    """conf/experiment/llama3_recycle.yaml's documented recycle-then-FT command fits an 80 GB GPU."""
    header = (CONF / "experiment" / "llama3_recycle.yaml").read_text().replace("\\\n#", " ")
    line = next(x for x in header.splitlines() if "recycle_train=true" in x)
    args = line.split("launch.py", 1)[1].split()
    assert "deepspeed=zero3" in args
    steps = stages(compose(*args), H100)
    assert all(s.fit in ("fits", "") for s in steps), [(s.stage, s.fit) for s in steps]


def test_zero3_over_8_devices_divides_the_model_states_as_deepspeeds_estimator():
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs

    a = Arch(32, 4096, 32, 8, 14336, 128256, tied=False)  # Llama-3-8B
    for offload_opt, offload_param in ((False, False), (True, False), (True, True)):
        e = train_memory(a, TrainSetup(micro_batch=1, seq_len=512, processes=8, weights="bfloat16", zero_stage=3,
                                       offload_optimizer=offload_opt, offload_param=offload_param))
        states = sum(v for k, v in e.parts.items() if k.startswith(("weights", "gathered", "optimizer")))
        _, gpu, _ = estimate_zero3_model_states_mem_needs(a.params, a.largest_layer, num_gpus_per_node=8,
                                                          cpu_offload=offload_opt, cpu_offload_params=offload_param)
        assert states == pytest.approx(gpu, rel=1e-6), (offload_opt, offload_param)


def test_deepspeed_zero3_composes_onto_any_trainer_as_the_zero3_trainer_has_it():
    assert compose("trainer=olmo_1b", "deepspeed=zero3").trainer.deepspeed == \
        compose("trainer=deepspeed_zero3").trainer.deepspeed
    t = compose("trainer=olmo_1b", "deepspeed=zero3").trainer
    assert (t.lr, t.batch_size, t.max_seq_len) == (5e-6, 16, 512)  # olmo_1b's schedule, kept


@pytest.mark.parametrize("name", sorted(p.stem for p in (CONF / "model").glob("*.yaml")))
def test_each_model_cards_numbers_give_its_stated_parameter_count(name):
    card = (yaml.safe_load((CONF / "model" / f"{name}.yaml").read_text()) or {}).get("card")
    if card is None:
        pytest.skip("no card: the toy model's architecture is model.arch")
    a = Arch(card["num_layers"], card["hidden_size"], card["num_heads"], card["num_kv_heads"],
             card["intermediate_size"], card["vocab_size"], card["tied_embeddings"])
    assert a.params == pytest.approx(card["params"], rel=1e-4)


def test_smollm2s_card_is_its_imported_config(smollm2_store):
    """The plan is the same before and after the GGUF import: the yaml's numbers are the import's config.json's."""
    before = arch_of(compose("model=smollm2_135m", f"store_dir={smollm2_store.parent / 'empty'}"))
    after = arch_of(compose("model=smollm2_135m", f"store_dir={smollm2_store}"))
    assert "config.json" in after.source and "card" in before.source
    strip = lambda a: {k: v for k, v in vars(a).items() if k != "source"}  # noqa: E731
    assert strip(before) == strip(after)


def test_the_plan_is_the_same_before_and_after_the_weights_exist(micro_store, tmp_path):
    """Same stages, keys and estimates on an empty store and on one holding the world and the base; only whether
    each is stored differs."""
    def plan(store):
        c = compose("debug=micro", "method=cfs", f"store_dir={store}")
        return [(s.stage, s.key, s.estimate and s.estimate.peak, s.time) for s in stages(c, H100)], \
            {s.stage: s.stored for s in stages(c, H100)}

    empty, stored_empty = plan(tmp_path / "empty")
    full, stored_full = plan(micro_store)
    assert empty == full
    assert not any(stored_empty.values()) and stored_full["world"] and stored_full["pretrain"]


@pytest.mark.parametrize("overrides", [("method=cfs", "eval.base_samples=4"), ("method=wise_ft",), ("method=ewc",),
                                       ("method=recycle", "method.recycle_from=[{pretrain: {steps: 10}}]")],
                         ids=["cfs+kl", "wise_ft", "ewc", "recycle"])
def test_the_plan_lists_exactly_what_a_run_builds_with_the_same_keys(store_copy, tmp_path, overrides):
    c = compose("debug=micro", f"store_dir={store_copy}", *overrides)
    planned = stages(c, H100)
    keys = pipeline_plan(c)
    for stage in ("world", "train", "merge", "evaluate"):
        got = [s.key for s in planned if s.stage == stage]
        assert (got[-1] if got else None) == keys[stage], stage
    log = Store(store_copy).log()
    before = len(log)
    run(c, tmp_path / "run")
    used = {(e["stage"], e["key"]) for e in Store(store_copy).log()[before:]}
    listed = {(s.stage, k) for s in planned for k in (s.keys or [s.key]) if s.stage != "hub"}
    assert used == listed


def _launch(*args, store=None, cwd=ROOT):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, str(ROOT / "launch.py"), *args], capture_output=True, text=True,
                          timeout=600, env=env, cwd=cwd)


@pytest.mark.parametrize("preset", PRESETS)
def test_plan_on_the_paper_presets_prints_every_stage_with_its_key_memory_and_time_offline(preset, tmp_path):
    store = tmp_path / "store"
    extra = ("method.recycle_train=true",) if preset == "llama3_recycle" else ()
    proc = _launch(f"+experiment={preset}", "device=cuda", *extra, f"store_dir={store}",
                   f"hydra.sweep.dir={tmp_path / 'sweep'}", f"hydra.run.dir={tmp_path / 'run'}", "--plan")
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert "report:" not in proc.stderr + out  # no complaint that a plan made no results
    listed = KEY.findall(out)
    assert {"train", "evaluate"} <= {stage for stage, _ in listed}
    estimated = sum(1 for stage, _ in listed if stage in ("train", "evaluate", "generate", "continue"))
    assert out.count("\n            memory ") == estimated and "per device on h100_80gb" in out
    assert re.search(r"compute [0-9.e+]+ FLOPs .*, [0-9.]+ (s|min|h|d) at MFU", out)
    assert not store.exists()  # nothing built, nothing written to the store
    if preset == "llama3_recycle":  # finding 9, with its fix
        assert "DOES NOT FIT" in out and "fix: deepspeed=zero3 trainer.num_processes=4" in out
    else:
        assert "sweep plan:" in out


def test_every_plan_key_is_a_key_the_pipeline_computes(tmp_path):
    """The printed keys of a hub preset are pipeline.plan's (no weights, no data: only the keys' inputs)."""
    c = compose("+experiment=llama3_recycle", "method.recycle_train=true", f"store_dir={tmp_path}")
    keys = pipeline_plan(c)
    listed = {s.stage: s.key for s in stages(c, H100)}
    assert (listed["train"], listed["evaluate"]) == (keys["train"], keys["evaluate"])


def test_a_run_that_does_not_fit_is_refused_in_one_line_before_anything_is_written(tmp_path):
    store = tmp_path / "store"
    args = ("debug=micro", "method=ft", "trainer.batch_size=65536", "trainer.grad_accum=1",
            "trainer.max_seq_len=128", f"store_dir={store}", f"hydra.run.dir={tmp_path / 'run'}")
    c = compose(*args[:-1])
    train = _step(stages(c), "train")
    assert train.fit == "does not fit", train.estimate.peak  # on this machine's available RAM
    proc = _launch(*args)
    assert proc.returncode == 2
    line = proc.stderr.strip().splitlines()[-1]  # (libraries may log warnings before it)
    assert line.startswith("error: stage train (") and "does not fit" in line and "e.g. trainer." in line
    assert sum(x.startswith("error:") for x in proc.stderr.splitlines()) == 1 and "Traceback" not in proc.stderr
    assert not store.exists()
    fix = _overrides(line.split("e.g. ", 1)[1].split(";")[0])
    assert _step(stages(with_overrides(c, fix)), "train").fit == "fits"


def test_fits_refuses_only_beyond_the_tolerance():
    memory = 80 * GiB
    assert fits(int(memory * (1 - TOLERANCE)), memory) == "fits"
    assert fits(memory, memory) == "tight" and fits(int(memory * (1 + TOLERANCE)), memory) == "tight"
    assert fits(int(memory * (1 + TOLERANCE)) + 1, memory) == "does not fit"


# ---- the estimate against the measured peak ------------------------------------------------------------------
MEASURED = ("debug=micro", "model.arch.hidden_size=128", "model.arch.num_layers=4", "model.arch.num_heads=4",
            "model.arch.intermediate_size=384", "model.arch.max_position_embeddings=256", "model.pretrain.steps=2",
            "trainer.max_steps=2", "trainer.batch_size=32", "trainer.max_seq_len=256", "trainer.save_steps=1000",
            "dataset=jsonl")


@pytest.fixture(scope="module")
def long_rows(tmp_path_factory):
    from bench.plan_memory import long_rows as write

    return write(tmp_path_factory.mktemp("rows") / "long.jsonl", n=64)


@pytest.mark.parametrize("method", ["ft", "lora"])
def test_the_toy_estimate_is_within_tolerance_of_the_measured_peak(method, long_rows, tmp_path):
    """A real train stage in a child process (bench/plan_memory.py): its peak of live memory against the plan's
    estimate for this machine, on rows long enough that every batch is as wide as the estimate assumes."""
    from bench.plan_memory import estimate, measure

    overrides = [*MEASURED, f"dataset.path={long_rows}", f"method={method}", f"store_dir={tmp_path / 'store'}"]
    got = measure(overrides)
    est = estimate(overrides).peak
    assert abs(est / got - 1) <= TOLERANCE, (est, got)
    assert got > 100 * 2**20  # a peak large enough to measure: activations and logits, not the interpreter
