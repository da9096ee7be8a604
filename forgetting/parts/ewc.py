"""Elastic weight consolidation (Kirkpatrick et al. 2017; paper 003 App. E.1.5): λ Σᵢ Fᵢ(θᵢ − θ*ᵢ)², with F the
diagonal Fisher of the base model on its pretraining distribution and θ* the base's weights.

    python launch.py method=ewc method.ewc_lambda=1e4                   # paper grid 1e3–1e5, 1e4 best
    python launch.py -m method=ewc method.ewc_lambda=1e3,1e4,1e5

F is a cached stage of its own (``fisher``): the empirical Fisher **per sequence**, Fᵢ = (1/N) Σₙ (∂ℓₙ/∂θᵢ)², ℓₙ
the mean token loss of sequence n, over N = ``fisher_batches`` × ``trainer.batch_size`` sequences (paper 003: 100
batches of 64) drawn without replacement from the toy world's pretraining corpus or, for any other model, from
the base's own context-free samples (the data CFS trains on: no pretraining data needed). This is Kirkpatrick et
al.'s definition (an expectation of squared per-example gradients) and does not depend on how the N sequences are
batched; the common batch-level shortcut, the squared gradient of a batch's mean loss, estimates μ² + σ²/B — it
shrinks with the batch size B, so λ would mean something else at every B. Paper 003 does not state which it used
(App. E.1.5: "Fisher Samples 100 batches", batch 64, ~6.5M calibration tokens). Cost: one backward pass per
sequence. The artifact holds F and θ*, so a resumed run keeps the base as its anchor. The penalty's gradient
2λF⊙(θ − θ*) is added once per optimizer step to the step's complete gradient (after SAM's second pass, if any;
``TrainHook.gradient``), before clipping, as a term of the loss would be; the logged ``ewc`` is the penalty. Full
fine-tuning in one process (refused with LoRA, whose trained weights are not the base's, and under DeepSpeed, whose
gradients are partitioned).

    pytest tests/train/test_ewc.py
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from forgetting.data.encode import Collator, encode_ids, encode_text
from forgetting.errors import ConfigError
from forgetting.parts.base import Regularizer, check_knob, register
from forgetting.parts.context_free import ContextFree
from forgetting.runtime import load
from forgetting.toy.world import ToyWorld


@dataclass
class EwcKnobs:
    ewc_lambda: float = 1e4  # paper 003 App. E.1.5: best of 1e3–1e5
    fisher_batches: int = 100  # paper 003: Fisher from 100 batches

    def __post_init__(self) -> None:
        check_knob(self.ewc_lambda >= 0, "ewc_lambda", self.ewc_lambda, "a number >= 0")
        check_knob(self.fisher_batches > 0, "fisher_batches", self.fisher_batches, "a positive integer")


def fisher_spec(ctx, batches: int) -> dict:
    c = ctx.c
    data = {"corpus": ctx.world} if ctx.world is not None and c.model.source == "toy" else \
        {"samples": _samples_part().source_spec(ctx)}
    return {"base": ctx.base, "data": data, "batches": batches, "batch_size": c.trainer.batch_size,
            "max_seq_len": c.trainer.max_seq_len, "seed": c.seed, "estimator": "per_sequence"}


def _samples_part():

    return ContextFree()


def estimate_fisher(model, rows: list[dict], pad_token_id: int) -> dict:
    """name → (1/N) Σₙ (∂ℓₙ/∂θ)² over the N encoded ``rows``, ℓₙ a row's mean token loss, fp32: each row is a
    backward pass of its own (a per-example gradient), so no batch size enters the estimate."""

    model.train()
    collate = Collator(pad_token_id)
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    fisher = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params.items()}
    for row in rows:
        batch = collate([row])
        model.zero_grad(set_to_none=True)
        loss = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss
        loss.backward()
        for n, p in params.items():
            if p.grad is not None:
                fisher[n].add_(p.grad.detach().float().pow(2), alpha=1.0 / len(rows))
    model.zero_grad(set_to_none=True)
    return fisher


def fisher_rows(rows: list[dict], n: int, seed: int) -> list[dict]:
    """``n`` rows drawn without replacement (all of them, in a seeded order, when there are fewer)."""
    order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed)).tolist()
    return [rows[i] for i in order[:n]]


def fisher_stage(ctx, batches: int):
    from safetensors.torch import save_file


    c, spec = ctx.c, fisher_spec(ctx, batches)

    def make(out: Path) -> None:
        model, tok = load(c, ctx.base, dtype="float32")
        n = batches * c.trainer.batch_size
        if "corpus" in spec["data"]:
            rows = [encode_text(tok, t, c.trainer.max_seq_len) for t in ToyWorld(ctx.world).corpus()]
        else:
            rows = [encode_ids(r["ids"], c.trainer.max_seq_len) for r in _samples_part().rows(ctx, n)]
        fisher = estimate_fisher(model, fisher_rows(rows, n, c.seed), tok.pad_token_id)
        save_file(fisher, str(out / "fisher.safetensors"))
        save_file({k: v.detach().float().contiguous() for k, v in model.named_parameters()},
                  str(out / "anchor.safetensors"))

    return ctx.store.build("fisher", spec, make)


@register
class EWC(Regularizer):
    name = "ewc"
    Knobs = EwcKnobs
    label = "EWC"

    def __init__(self, knobs=None):
        super().__init__(knobs)
        self.fisher_dir: Path | None = None
        self._tensors = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_tensors": None}

    def check(self, config) -> None:

        if config.method.adapter != "full":
            raise ConfigError(f"method.adapter={config.method.adapter} is invalid with method.regularizer=ewc: "
                              "expected full (EWC anchors the base's own weights)")
        if config.trainer.deepspeed:
            raise ConfigError(f"method.regularizer=ewc is invalid with trainer={config.trainer.name} (DeepSpeed): "
                              "expected a trainer without DeepSpeed (its gradients are partitioned)")

    def source_spec(self, ctx) -> dict:
        return fisher_spec(ctx, self.knobs.fisher_batches)

    def prepare(self, ctx) -> None:
        self.fisher_dir = fisher_stage(ctx, self.knobs.fisher_batches).path

    def _pairs(self, model):
        """[(param, F, θ*)] of the trained model, F and θ* read once and put on each parameter's device once."""
        if self._tensors is None:
            from safetensors.torch import load_file

            f = load_file(str(self.fisher_dir / "fisher.safetensors"))
            a = load_file(str(self.fisher_dir / "anchor.safetensors"))
            self._tensors = [(p, f[n].to(p.device), a[n].to(p.device)) for n, p in model.named_parameters() if n in f]
        return self._tensors

    def gradient(self, trainer, model) -> None:
        if self.knobs.ewc_lambda <= 0:
            return
        with torch.no_grad():
            for p, f, anchor in self._pairs(trainer.model):
                if p.grad is not None:
                    p.grad.add_((2 * self.knobs.ewc_lambda * f * (p.float() - anchor)).to(p.grad.dtype))

    def penalty(self, model) -> float:
        with torch.no_grad():
            return self.knobs.ewc_lambda * sum(float((f * (p.float() - a).pow(2)).sum())
                                               for p, f, a in self._pairs(model))

    def log(self, trainer, logs: dict) -> None:
        if "loss" in logs and self.fisher_dir is not None:
            logs["ewc"] = self.penalty(trainer.model)
