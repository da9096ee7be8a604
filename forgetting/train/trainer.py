"""The one trainer: HF ``Trainer`` with a per-token weighted loss, checkpoints, and resume after a kill.

    python launch.py method=ft debug=micro

Used for both the toy model's pretraining and every fine-tuning method. The loss is
``sum(w_t * CE_t) / #loss-tokens`` over the (accumulated) batch: with all weights 1 it is HF's own
token-mean loss; synthetic rows carry ``w = method.weight`` (lambda of the paper's Eq. 2).
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


class Rows(Dataset):
    def __init__(self, rows: list[dict]):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        return self.rows[i]


class WeightedTrainer(Trainer):
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
          gradient_checkpointing: bool = False) -> dict:
    """Train for exactly ``steps`` optimizer steps, checkpointing into ``work_dir`` and resuming from it;
    save the final model (safetensors) and tokenizer into ``out_dir``. Returns a summary.

    A peft model (LoRA) is merged into its base weights before saving, so every evaluator sees a plain
    checkpoint. ``l2_lambda > 0`` adds λ‖θ − θ*‖² to the initial weights (``forgetting.train.l2``)."""
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
        report_to="none",
        remove_unused_columns=False,
        dataloader_num_workers=0,
        disable_tqdm=False,
    )
    callbacks = []
    if l2_lambda > 0:
        from forgetting.train.l2 import L2Anchor, L2Logger

        # the anchor is the model as given, i.e. θ* even when resuming: checkpoints are loaded after this
        callbacks.append(L2Logger(L2Anchor(model, l2_lambda, grad_accum)))
    trainer = WeightedTrainer(model=model, args=args, train_dataset=Rows(rows),
                              data_collator=Collator(tokenizer.pad_token_id), callbacks=callbacks)
    resume = get_last_checkpoint(str(work_dir)) if Path(work_dir).exists() else None
    result = trainer.train(resume_from_checkpoint=resume)
    if hasattr(model, "merge_and_unload"):
        model.merge_and_unload().save_pretrained(str(out_dir))
    else:
        trainer.save_model(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    summary = {"steps": trainer.state.global_step, "resumed_from": resume, "train_loss": result.training_loss,
               "rows": len(rows)}
    with open(Path(out_dir) / "train_log.jsonl", "w") as f:
        for entry in trainer.state.log_history:
            f.write(json.dumps(entry) + "\n")
    (Path(out_dir) / "train_summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def param_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
