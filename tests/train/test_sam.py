"""SAM (forgetting/train/sam.py, the part forgetting/parts/sam.py): ρ = 0 is AdamW bit for bit; on a quadratic the step
is the analytic one; SAM under gradient accumulation is SAM on the larger batch (not a perturbation per micro-
batch); a killed run resumes to identical weights; DeepSpeed is refused in one line. And the toy base's pretraining
segments (forgetting/train/pretrain.py): a WSD prefix is shared by bases that differ only in their decay, and a
continuation starts from its parent's AdamW state with its own lr."""
from __future__ import annotations

import shutil
from types import SimpleNamespace

import pytest
import torch
from conftest import compose
from safetensors.torch import load_file

from forgetting.config import TrainerConfig
from forgetting.errors import ConfigError
from forgetting.parts.sam import SAM, SamKnobs
from forgetting.pipeline import base_stage, world_stage
from forgetting.runtime import load
from forgetting.store import Store
from forgetting.train.trainer import train


class Quadratic(torch.nn.Module):
    """L(θ) = ½ θᵀAθ, per-sample: each micro-batch carries its own A."""

    def __init__(self, theta):
        super().__init__()
        self.theta = torch.nn.Parameter(theta.clone())

    def loss(self, a):
        return 0.5 * self.theta @ a @ self.theta


def _fake_trainer(sync=True):
    return SimpleNamespace(is_deepspeed_enabled=False,
                           accelerator=SimpleNamespace(sync_gradients=sync, num_processes=1))


def _step(model, inputs, num_items_in_batch=None):
    loss = model.loss(inputs["a"]) / inputs["n"]
    loss.backward()
    return loss.detach()


def test_on_a_quadratic_the_sam_gradient_is_the_analytic_one_and_the_weights_come_back_exactly():
    a = torch.tensor([[3.0, 0.5], [0.5, 1.0]], dtype=torch.float64)
    theta = torch.tensor([1.0, -2.0], dtype=torch.float64)
    rho = 0.1
    model = Quadratic(theta)
    sam = SAM(SamKnobs(rho=rho))
    sam.training_step(_fake_trainer(), _step, model, {"a": a, "n": 1})
    g = a @ theta
    eps = rho * g / g.norm()
    expected = a @ (theta + eps)  # ∇L(θ + ε)
    assert torch.allclose(model.theta.grad, expected, atol=1e-12)
    assert torch.equal(model.theta.detach(), theta)  # restored bit for bit, not θ + ε − ε
    # and the base optimizer's step is then θ − lr·∇L(θ + ε)
    opt = torch.optim.SGD(model.parameters(), lr=0.2)
    opt.step()
    assert torch.allclose(model.theta.detach(), theta - 0.2 * expected, atol=1e-12)


def test_accumulated_micro_batches_perturb_once_along_the_whole_batch_gradient():
    a1 = torch.tensor([[2.0, 0.0], [0.0, 0.5]], dtype=torch.float64)
    a2 = torch.tensor([[0.2, 0.3], [0.3, 4.0]], dtype=torch.float64)
    theta = torch.tensor([0.7, 0.4], dtype=torch.float64)
    rho = 0.3
    model = Quadratic(theta)
    sam = SAM(SamKnobs(rho=rho))
    sam.training_step(_fake_trainer(sync=False), _step, model, {"a": a1, "n": 2})
    sam.training_step(_fake_trainer(sync=True), _step, model, {"a": a2, "n": 2})
    mean = (a1 + a2) / 2
    g = mean @ theta
    expected = mean @ (theta + rho * g / g.norm())
    assert torch.allclose(model.theta.grad, expected, atol=1e-12)
    # what a per-micro-batch SAM would give instead (the known bug of public SAM code): measurably different
    per_micro = sum(a @ (theta + rho * (a @ theta) / (a @ theta).norm()) for a in (a1, a2)) / 2
    assert not torch.allclose(per_micro, expected, atol=1e-3)


@pytest.fixture(scope="module")
def setup(micro_store):
    from forgetting.data.datasets import load_downstream
    from forgetting.runtime import encode_example

    c = compose("debug=micro", f"store_dir={micro_store}")
    store = Store(micro_store)
    world = world_stage(c, store)
    base = base_stage(c, store, world)
    _, tok = load(c, base)
    rows = [encode_example(tok, c, r["query"], r["response"]) for r in load_downstream(c.dataset, world)]
    return c, base, tok, rows


def _train(setup, out, *, rho, batch_size=8, grad_accum=1, steps=4, save_steps=50):
    c, base, tok, rows = setup
    model, _ = load(c, base)
    t = TrainerConfig(lr=3e-3, batch_size=batch_size, grad_accum=grad_accum, save_steps=save_steps,
                      logging_steps=1, warmup_ratio=0.0)
    hooks = [SAM(SamKnobs(rho=rho))] if rho is not None else []
    summary = train(model, tok, rows, out / "model", out / "work", t, steps=steps, seed=0, hooks=hooks)
    return summary, load_file(str(out / "model" / "model.safetensors"))


def _max_diff(a, b):
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def test_rho_zero_is_adamw_bit_for_bit(setup, tmp_path):
    _, adamw = _train(setup, tmp_path / "adamw", rho=None)
    _, off = _train(setup, tmp_path / "off", rho=0.0)
    _, on = _train(setup, tmp_path / "on", rho=0.05)
    assert all(torch.equal(adamw[k], off[k]) for k in adamw)
    assert _max_diff(adamw, on) > 1e-4  # and ρ > 0 does change the update


def test_sam_with_gradient_accumulation_equals_sam_on_the_larger_batch(setup, tmp_path):
    _, big = _train(setup, tmp_path / "big", rho=0.05, batch_size=8)
    _, accum = _train(setup, tmp_path / "accum", rho=0.05, batch_size=4, grad_accum=2)
    _, adamw = _train(setup, tmp_path / "adamw", rho=None, batch_size=8)
    # the same 8 rows per step, split in two micro-batches: equal up to float summation order
    assert _max_diff(big, accum) < 1e-5
    assert _max_diff(big, adamw) > 100 * _max_diff(big, accum)


def test_a_killed_sam_run_resumes_to_identical_weights(setup, tmp_path):
    full, weights = _train(setup, tmp_path / "full", rho=0.05, steps=6, save_steps=3)
    shutil.copytree(tmp_path / "full" / "work" / "checkpoint-3", tmp_path / "resumed" / "work" / "checkpoint-3")
    resumed, again = _train(setup, tmp_path / "resumed", rho=0.05, steps=6, save_steps=3)
    assert resumed["resumed_from"].endswith("checkpoint-3") and resumed["steps"] == 6
    assert all(torch.equal(weights[k], again[k]) for k in weights)


def test_sam_under_deepspeed_is_refused_in_one_line():
    with pytest.raises(ConfigError, match=r"method.optimizer=sam is invalid with trainer=deepspeed_zero3"):
        compose("method=sam", "trainer=deepspeed_zero3")
    compose("method=sam", "trainer=deepspeed_zero3", "method.rho=0")  # ρ 0 is AdamW: allowed


def test_a_wsd_prefix_is_shared_by_bases_that_differ_in_their_decay(micro_store, tmp_path):
    root = tmp_path / "store"
    shutil.copytree(micro_store / "world", root / "world")
    store = Store(root)
    wsd = ["debug=micro", f"store_dir={root}", "model.pretrain.schedule=wsd", "model.pretrain.decay_ratio=0.25"]
    bases = {}
    for name, extra in {"adamw": [], "sam_decay": ["model.pretrain.rho=0.05", "model.pretrain.sam_phase=decay"],
                        "sam_all": ["model.pretrain.rho=0.05"]}.items():
        c = compose(*wsd, *extra)
        bases[name] = base_stage(c, store, world_stage(c, store))
    assert len({b.key for b in bases.values()}) == 3
    assert len(list((root / "pretrain").glob("[!.]*"))) == 2  # AdamW and SAM-decay share the stable prefix
    assert len(list((root / "continue").glob("[!.]*"))) == 3
    for b in bases.values():
        assert (b.path / "optimizer.pt").exists()
    # the decay ended at 10% of the peak (paper 003 §3.3), continuing the prefix's AdamW state (its step counts go on
    # from the prefix's)
    saved = torch.load(bases["adamw"].path / "optimizer.pt", weights_only=True)
    assert saved["param_groups"][0]["lr"] == pytest.approx(0.1 * 3e-3)
    assert int(next(iter(saved["state"].values()))["step"]) == 20  # 15 prefix steps + 5 decay steps


def test_a_continuation_takes_its_parents_state_and_its_own_lr(setup, tmp_path):
    c, base, tok, rows = setup
    model, _ = load(c, base)
    t = TrainerConfig(lr=1e-3, batch_size=8, warmup_ratio=0.0, scheduler="constant", logging_steps=1)
    train(model, tok, rows, tmp_path / "a", tmp_path / "wa", t, steps=3, seed=0, keep_optimizer=True)
    from forgetting.models import load_model

    model = load_model(str(tmp_path / "a"), "float32", False, None)
    t2 = TrainerConfig(lr=5e-4, batch_size=8, warmup_ratio=0.0, scheduler="constant", logging_steps=1)
    train(model, tok, rows, tmp_path / "b", tmp_path / "wb", t2, steps=2, seed=0,
          init_optimizer=tmp_path / "a" / "optimizer.pt", keep_optimizer=True)
    saved = torch.load(tmp_path / "b" / "optimizer.pt", weights_only=True)
    assert int(next(iter(saved["state"].values()))["step"]) == 5
    assert saved["param_groups"][0]["lr"] == 5e-4


def test_midtrain_settings_key_the_base_only_when_it_runs(micro_store):
    from forgetting.pipeline import plan

    def base(*o):
        return plan(compose("debug=micro", f"store_dir={micro_store}", *o))["base"]

    assert base("model.midtrain.rho=0.05") == base()  # steps 0: no continuation
    on = base("model.midtrain.steps=3")
    assert on != base()
    assert len({on, base("model.midtrain.steps=3", "model.midtrain.rho=0.05"),
                base("model.midtrain.steps=3", "model.midtrain.lr=1e-3")}) == 3


def test_adam_beta2_reaches_the_optimizer_and_keys_only_when_set(tmp_path):
    """model.pretrain.adam_beta2 (paper 003's pretraining: 0.95) is the β2 AdamW steps with (saved in the segment's
    optimizer state); at the default 0.999 the key is the one made before the option existed."""
    from forgetting.pipeline import plan

    common = ("debug=micro", f"store_dir={tmp_path}", "model.pretrain.steps=3")
    assert plan(compose(*common))["base"] == plan(compose(*common, "model.pretrain.adam_beta2=0.999"))["base"]
    c = compose(*common, "model.pretrain.adam_beta2=0.95")
    assert plan(c)["base"] != plan(compose(*common))["base"]
    store = Store(tmp_path)
    base = base_stage(c, store, world_stage(c, store))
    saved = torch.load(base.path / "optimizer.pt", weights_only=True)
    assert tuple(saved["param_groups"][0]["betas"]) == (0.9, 0.95)


def test_sam_with_ewc_adds_the_penalty_gradient_once_per_step_at_any_accumulation(setup, tmp_path):
    """SAM replays the step's micro-batches; EWC's gradient 2λF(θ − θ*) joins the complete gradient once per step
    (TrainHook.gradient), so batch 8 and 4 micro-batches of 2 train the same weights."""
    from safetensors.torch import save_file

    from forgetting.parts.ewc import EWC, EwcKnobs

    c, base, tok, rows = setup
    model, _ = load(c, base)
    save_file({n: torch.ones_like(p) for n, p in model.named_parameters()}, str(tmp_path / "fisher.safetensors"))
    save_file({n: p.detach().clone() for n, p in model.named_parameters()}, str(tmp_path / "anchor.safetensors"))

    def run(name, batch_size, grad_accum):
        ewc = EWC(EwcKnobs(ewc_lambda=50.0))
        ewc.fisher_dir = tmp_path
        t = TrainerConfig(lr=3e-3, batch_size=batch_size, grad_accum=grad_accum, save_steps=50, logging_steps=1,
                          warmup_ratio=0.0)
        train(load(c, base)[0], tok, rows, tmp_path / name / "model", tmp_path / name / "work", t, steps=4, seed=0,
              hooks=[SAM(SamKnobs(rho=0.05)), ewc])
        return load_file(str(tmp_path / name / "model" / "model.safetensors"))

    one, four = run("one", 8, 1), run("four", 2, 4)
    assert _max_diff(one, four) < 1e-5
    _, sam_only = _train(setup, tmp_path / "sam", rho=0.05)
    assert _max_diff(one, sam_only) > 100 * _max_diff(one, four)  # and the penalty did act


def test_wsd_decays_linearly_to_a_tenth_of_the_peak_at_its_last_step():
    """Paper 003 §3.3: after the stable phase the lr decays to 10% of its peak over the final d steps."""
    from transformers import get_scheduler

    from forgetting.train.pretrain import schedule, segments

    p = compose("pretrain=wsd", "model.pretrain.steps=200", "model.pretrain.lr=2e-3").model.pretrain
    stable, decay = segments(p, seed=0)
    assert decay["steps"] == 20 and stable["steps"] == 180
    name, kwargs = schedule(decay)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=decay["lr"])
    sched = get_scheduler(name, opt, num_warmup_steps=0, num_training_steps=decay["steps"],
                          scheduler_specific_kwargs=kwargs)
    lrs = []
    for _ in range(decay["steps"]):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(2e-3) and lrs[-1] == pytest.approx(0.1 * 2e-3)
    steps = [a - b for a, b in zip(lrs, lrs[1:])]
    assert max(steps) == pytest.approx(min(steps))  # linear
    assert schedule(stable) == ("constant_with_warmup", {})
