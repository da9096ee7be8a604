"""The one trainer: HF ``Trainer`` with a per-token weighted loss, checkpoints, and resume after a kill.

    python launch.py method=ft debug=micro
    python launch.py method=l2 trainer=deepspeed_zero3 trainer.num_processes=8 trainer.grad_accum=4 device=cuda

Used for both the toy model's pretraining and every fine-tuning method. The loss is
``sum(w_t * CE_t) / #loss-tokens`` over the (accumulated) batch: with all weights 1 it is HF's own
token-mean loss; synthetic rows carry ``w = method.weight`` (lambda of the paper's Eq. 2). ℓ2 to the initial
weights lives in the optimizer (``forgetting.train.l2``), so it is the same in one process and under DeepSpeed
ZeRO-3 in N processes (``forgetting.train.distributed``).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from transformers import Trainer, TrainingArguments
from transformers.trainer_utils import get_last_checkpoint

from forgetting.data.encode import IGNORE, Collator
from forgetting.models import DTYPES


class Rows(Dataset):
    def __init__(self, rows: list[dict]):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        return self.rows[i]


class WeightedTrainer(Trainer):
    """The per-token weighted loss; with ``l2_lambda > 0`` the optimizer carries the ℓ2 anchor
    (``forgetting.train.l2``) and the logs report the penalty as ``l2``."""

    def __init__(self, *args, l2_lambda: float = 0.0, **kwargs):
        self.l2_lambda = l2_lambda
        super().__init__(*args, **kwargs)

    def get_optimizer_cls_and_kwargs(self, args, model=None):
        cls, kwargs = Trainer.get_optimizer_cls_and_kwargs(args, model)
        if self.l2_lambda <= 0:
            return cls, kwargs
        from forgetting.train.l2 import with_l2

        return with_l2(cls), {**kwargs, "l2_lambda": self.l2_lambda}

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if self.l2_lambda > 0 and "loss" in logs and self.optimizer is not None:
            from forgetting.train.l2 import l2_penalty

            # under ZeRO each rank's optimizer holds a disjoint shard of the weights: sum over the ranks
            sharded = self.is_deepspeed_enabled and self.accelerator.state.deepspeed_plugin.zero_stage > 0
            logs["l2"] = l2_penalty(self.optimizer, sharded)
        super().log(logs, start_time)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        weight = inputs.pop("loss_weight")
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        logits = outputs.logits[:, :-1].float()
        target, w = labels[:, 1:], weight[:, 1:]
        ce = F.cross_entropy(logits.reshape(-1, logits.size(-1)), target.reshape(-1),
                             ignore_index=IGNORE, reduction="none")
        # num_items_in_batch counts loss tokens over every micro-batch of the accumulated step (HF fix for the
        # gradient-accumulation loss bug), so the sum here must be divided by it, not by this micro-batch's count
        denom = num_items_in_batch if num_items_in_batch is not None else (target != IGNORE).sum().clamp(min=1)
        loss = (ce * w.reshape(-1)).sum() / denom
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * self.accelerator.num_processes
        return (loss, outputs) if return_outputs else loss


def train(model, tokenizer, rows: list[dict], out_dir: Path, work_dir: Path, *, steps: int, lr: float,
          batch_size: int, grad_accum: int = 1, warmup_ratio: float = 0.03, scheduler: str = "cosine",
          weight_decay: float = 0.0, save_steps: int = 50, logging_steps: int = 10, seed: int = 0,
          bf16: bool = False, optim: str = "adamw_torch", use_cpu: bool = True, l2_lambda: float = 0.0,
          gradient_checkpointing: bool = False, deepspeed: dict | None = None, num_processes: int = 1,
          report_to: str = "none", packing: bool = False, save_dtype: str | None = None) -> dict:
    """Train for exactly ``steps`` optimizer steps, checkpointing into ``work_dir`` and resuming from it;
    save the final model (safetensors) and tokenizer into ``out_dir``. Returns a summary.

    ``model`` is a model, or a function that creates one. A peft model (LoRA) is merged into its base weights
    before saving, so every evaluator sees a plain checkpoint. ``l2_lambda > 0`` adds λ‖θ − θ*‖² to the initial
    weights (``forgetting.train.l2``). With a ``deepspeed`` config (e.g. ZeRO-3) or ``num_processes > 1``,
    training runs in ``num_processes`` worker processes (``forgetting.train.distributed``); ``model`` must then be
    a picklable function, since each worker creates the model itself (under ZeRO-3, already partitioned).
    ``packing``: padding-free batches (``forgetting.data.encode.Collator``). ``bf16``: bf16 autocast compute, the
    weights (and the optimizer's update of them) stay in the dtype the model has — fp32 master weights for an fp32
    model. ``save_dtype`` (e.g. ``"bfloat16"``): the saved model is cast to it once, after training (not under
    DeepSpeed, which saves its own 16-bit or fp32 weights)."""
    out_dir, work_dir = Path(out_dir), Path(work_dir)
    settings = dict(steps=steps, lr=lr, batch_size=batch_size, grad_accum=grad_accum, warmup_ratio=warmup_ratio,
                    scheduler=scheduler, weight_decay=weight_decay, save_steps=save_steps,
                    logging_steps=logging_steps, seed=seed, bf16=bf16, optim=optim, use_cpu=use_cpu,
                    l2_lambda=l2_lambda, gradient_checkpointing=gradient_checkpointing, deepspeed=deepspeed,
                    packing=packing, save_dtype=save_dtype)
    if deepspeed is not None or num_processes > 1:
        from forgetting.train.distributed import consolidate, launch

        launch(model, rows, tokenizer.pad_token_id, out_dir, work_dir, num_processes, settings)
        consolidate(model, out_dir)
        summary = json.loads((out_dir / "train_summary.json").read_text())
    else:
        # in-process only: worker processes have no W&B run (their curves reach it from train_log.jsonl)
        summary = fit(model, rows, tokenizer.pad_token_id, out_dir, work_dir, **settings, report_to=report_to)
    tokenizer.save_pretrained(str(out_dir))
    summary = {**summary, "rows": len(rows), "processes": num_processes}
    (out_dir / "train_summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def fit(model, rows: list[dict], pad_token_id: int, out_dir: Path, work_dir: Path, *, steps: int, lr: float,
        batch_size: int, grad_accum: int, warmup_ratio: float, scheduler: str, weight_decay: float,
        save_steps: int, logging_steps: int, seed: int, bf16: bool, optim: str, use_cpu: bool, l2_lambda: float,
        gradient_checkpointing: bool, deepspeed: dict | None, packing: bool = False,
        configured_state: bool = False, report_to: str = "none", save_dtype: str | None = None) -> dict:
    """The training itself, in this process (one of the workers when distributed); see :func:`train`. Only the
    main process writes: the model, ``train_log.jsonl`` and ``train_summary.json`` into ``out_dir``."""
    args = TrainingArguments(
        output_dir=str(work_dir),
        max_steps=steps,
        learning_rate=lr,
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=grad_accum,
        warmup_steps=max(0, round(warmup_ratio * steps)),
        lr_scheduler_type=scheduler,
        weight_decay=weight_decay,
        save_strategy="steps",
        save_steps=save_steps,
        save_total_limit=2,
        logging_steps=logging_steps,
        seed=seed,
        data_seed=seed,
        bf16=bf16,
        gradient_checkpointing=gradient_checkpointing,
        optim=optim,
        use_cpu=use_cpu,
        report_to=report_to,  # "wandb": HF's WandbCallback logs the curves into the active run
        remove_unused_columns=False,
        dataloader_num_workers=0,
        disable_tqdm=False,
        deepspeed=deepspeed,
        # the workers on CPU set up their gloo process group before this (forgetting.train.distributed)
        accelerator_config={"use_configured_state": True} if configured_state else None,
    )
    if not isinstance(model, torch.nn.Module):
        # created after TrainingArguments: under ZeRO-3 its live DeepSpeed config makes from_pretrained load
        # each weight straight into its partitions
        model = model()
    trainer = WeightedTrainer(model=model, args=args, train_dataset=Rows(rows),
                              data_collator=Collator(pad_token_id, packing=packing), l2_lambda=l2_lambda)
    resume = get_last_checkpoint(str(work_dir)) if Path(work_dir).exists() else None
    result = trainer.train(resume_from_checkpoint=resume)
    if trainer.is_deepspeed_enabled:
        # every rank joins the gather; rank 0 writes the 16-bit weights, or the ZeRO checkpoint when
        # stage3_gather_16bit_weights_on_model_save is off (a peft model: its adapter); distributed.consolidate
        # turns either into the plain checkpoint
        trainer.save_model(str(out_dir))
    else:
        # training is over: the weights are rounded to save_dtype once, here (LoRA after the merge, which adds the
        # fp32 adapters' product to the base weights)
        final = model.merge_and_unload() if hasattr(model, "merge_and_unload") else model
        if save_dtype is not None:
            final.to(DTYPES[save_dtype])
        if final is not model:
            if args.should_save:
                final.save_pretrained(str(out_dir))
        else:
            trainer.save_model(str(out_dir))
    summary = {"steps": trainer.state.global_step, "resumed_from": resume, "train_loss": result.training_loss}
    if args.should_save:
        with open(Path(out_dir) / "train_log.jsonl", "w") as f:
            for entry in trainer.state.log_history:
                f.write(json.dumps(entry) + "\n")
        (Path(out_dir) / "train_summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def param_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
