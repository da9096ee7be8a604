"""One training run in this process: HF ``Trainer`` with a per-token weighted loss, the method's hooks, checkpoints
and resume. ``forgetting.train.trainer.train`` calls it here or in each of N worker processes
(``forgetting.train.distributed``).

    pytest tests/train/test_l2.py tests/data/test_packing.py

The loss is ``sum(w_t * CE_t) / #loss-tokens`` over the (accumulated) batch: with all weights 1 it is HF's own
token-mean loss; augmentation rows carry ``w = method.weight`` (λ of the paper's Eq. 2).
"""
from __future__ import annotations

import json
import logging
import re
import shutil
from functools import partial
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from transformers import Trainer, TrainerCallback, TrainingArguments

from forgetting.data.encode import IGNORE, Collator
from forgetting.models import DTYPES

log = logging.getLogger("forgetting")


class Rows(Dataset):
    def __init__(self, rows: list[dict]):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        return self.rows[i]


class WeightedTrainer(Trainer):
    """The per-token weighted loss, and the method's hooks into the update (``forgetting.train.hooks.Hook``:
    e.g. the ℓ2 anchor in the optimizer, its penalty in the logs)."""

    def __init__(self, *args, hooks: Sequence = (), init_optimizer: Path | None = None, **kwargs):
        self.hooks = list(hooks)
        self.init_optimizer = init_optimizer
        super().__init__(*args, **kwargs)

    def create_optimizer(self, model=None):
        """The optimizer, starting from ``init_optimizer``'s state when given (a resumed checkpoint's state, loaded
        after this, still wins). Only the state is taken: lr, betas and weight decay are this run's."""
        optimizer = super().create_optimizer(model)
        if self.init_optimizer is not None:
            saved = torch.load(self.init_optimizer, map_location="cpu", weights_only=True)
            ours = self.optimizer.param_groups
            if [len(g["params"]) for g in saved["param_groups"]] != [len(g["params"]) for g in ours]:
                raise ValueError(f"{self.init_optimizer}: its parameter groups do not match this model's")
            saved["param_groups"] = [{**{k: v for k, v in g.items() if k != "params"}, "params": s["params"]}
                                     for g, s in zip(ours, saved["param_groups"])]
            self.optimizer.load_state_dict(saved)
        return optimizer

    def get_optimizer_cls_and_kwargs(self, args, model=None):
        cls, kwargs = Trainer.get_optimizer_cls_and_kwargs(args, model)
        for hook in self.hooks:
            cls, kwargs = hook.optimizer(cls, kwargs)
        return cls, kwargs

    def training_step(self, model, inputs, num_items_in_batch=None):
        step = super().training_step
        for hook in reversed(self.hooks):  # the first hook is the outermost
            step = partial(hook.training_step, self, step)
        loss = step(model, inputs, num_items_in_batch)
        if self.accelerator.sync_gradients:  # the step's last micro-batch: its gradient is complete (and reduced)
            for hook in self.hooks:
                hook.gradient(self, model)
        return loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        for hook in self.hooks:
            hook.log(self, logs)
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


class Snapshots(TrainerCallback):
    """Saves the model at ``steps`` into ``work_dir/snapshots/step-N`` (which survives a kill; a resumed run keeps
    the ones taken before it)."""

    def __init__(self, steps, root: Path):
        self.steps, self.root = set(steps), Path(root)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step in self.steps and args.should_save:
            target = self.root / f"step-{state.global_step}"
            tmp = self.root / f".tmp-step-{state.global_step}"
            shutil.rmtree(tmp, ignore_errors=True)
            model.save_pretrained(str(tmp))
            shutil.rmtree(target, ignore_errors=True)
            tmp.rename(target)


def last_complete_checkpoint(work_dir: Path, remove: bool = True) -> str | None:
    """The newest ``checkpoint-N`` in ``work_dir`` that is whole: HF writes a checkpoint's ``trainer_state.json``
    last, after the weights, optimizer, scheduler and RNG states, so a checkpoint whose state file parses and says step
    N is complete. Newer ones that a kill or a full disk cut short are ignored (and removed, by the main process), so a
    rerun resumes from the last whole one instead of failing on a half-written one."""
    if not work_dir.is_dir():
        return None
    found = sorted(((int(m.group(1)), p) for p in work_dir.iterdir()
                    if p.is_dir() and (m := re.fullmatch(r"checkpoint-(\d+)", p.name))), reverse=True)
    for step, path in found:
        try:
            whole = json.loads((path / "trainer_state.json").read_text()).get("global_step") == step
        except (OSError, ValueError):
            whole = False
        if whole:
            return str(path)
        log.warning("checkpoint %s is incomplete (a kill or a full disk while it was written): %s", path,
                    "removed; resuming from the one before" if remove else "skipped")
        if remove:
            shutil.rmtree(path, ignore_errors=True)
    return None


def fit(model, rows: list[dict], pad_token_id: int, out_dir: Path, work_dir: Path, t, *, steps: int, seed: int = 0,
        hooks: Sequence = (), use_cpu: bool = True, configured_state: bool = False, report_to: str = "none",
        save_dtype: str | None = None, init_optimizer: Path | None = None, keep_optimizer: bool = False) -> dict:
    """The training itself, in this process (one of the workers when distributed); see
    :func:`forgetting.train.trainer.train`. Only the main process writes: the model, ``train_log.jsonl`` and
    ``train_summary.json`` into ``out_dir``."""
    optim = next((h.hf_optim for h in hooks if getattr(h, "hf_optim", None)), "adamw_torch")
    args = TrainingArguments(
        output_dir=str(work_dir),
        max_steps=steps,
        learning_rate=t.lr,
        per_device_train_batch_size=t.batch_size,
        gradient_accumulation_steps=t.grad_accum,
        warmup_steps=max(0, round(t.warmup_ratio * steps)),
        lr_scheduler_type=t.scheduler,
        lr_scheduler_kwargs=dict(t.scheduler_kwargs),
        weight_decay=t.weight_decay,
        adam_beta2=t.adam_beta2,
        save_strategy="steps",
        save_steps=t.save_steps,
        save_total_limit=2,
        logging_steps=t.logging_steps,
        seed=seed,
        data_seed=seed,
        bf16=t.bf16,
        gradient_checkpointing=t.gradient_checkpointing,
        optim=optim,
        use_cpu=use_cpu,
        report_to=report_to,  # "wandb": HF's WandbCallback logs the curves into the active run
        remove_unused_columns=False,
        dataloader_num_workers=0,
        disable_tqdm=False,
        deepspeed=t.deepspeed,
        # the workers on CPU set up their gloo process group before this (forgetting.train.distributed)
        accelerator_config={"use_configured_state": True} if configured_state else None,
    )
    if not isinstance(model, torch.nn.Module):
        # created after TrainingArguments: under ZeRO-3 its live DeepSpeed config makes from_pretrained load
        # each weight straight into its partitions
        model = model()
    dataset = rows.dataset() if hasattr(rows, "dataset") else Rows(rows)  # a stream (PackedCorpus) or rows
    trainer = WeightedTrainer(model=model, args=args, train_dataset=dataset,
                              data_collator=Collator(pad_token_id, packing=t.packing), hooks=hooks,
                              init_optimizer=init_optimizer)
    snapshots = Path(work_dir) / "snapshots"
    if t.snapshot_steps:
        trainer.add_callback(Snapshots(t.snapshot_steps, snapshots))
    resume = last_complete_checkpoint(Path(work_dir), args.should_save)
    if resume and args.should_save:  # a killed, preempted or timed-out (SLURM-requeued) run picks up here
        log.info("train: resuming from %s (of %d steps)", Path(resume).name, steps)
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
    if t.snapshot_steps and args.should_save and snapshots.exists():
        shutil.copytree(snapshots, Path(out_dir) / "snapshots", ignore=shutil.ignore_patterns(".tmp-*"))
    if keep_optimizer and args.should_save:
        torch.save(trainer.optimizer.state_dict(), Path(out_dir) / "optimizer.pt")
    if args.should_save:
        with open(Path(out_dir) / "train_log.jsonl", "w") as f:
            for entry in trainer.state.log_history:
                f.write(json.dumps(entry) + "\n")
        (Path(out_dir) / "train_summary.json").write_text(json.dumps(summary, indent=1))
    return summary
