"""The one trainer: fine-tune a model on encoded rows for exactly N steps, in this process or in N worker
processes (DeepSpeed ZeRO-3 or data parallel), checkpointing and resuming after a kill.

    python launch.py method=ft debug=micro
    python launch.py method=l2 trainer=deepspeed_zero3 trainer.num_processes=8 trainer.grad_accum=4 device=cuda

Used for both the toy model's pretraining and every fine-tuning method: the run's settings are one typed trainer
config (``TrainerConfig``), and what a method changes in the update comes in as its parts' hooks
(``forgetting.parts``). The training loop itself is :func:`forgetting.train.fit.fit`.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from forgetting.config import TrainerConfig
from forgetting.train.distributed import consolidate, launch


def train(model, tokenizer, rows: list[dict], out_dir: Path, work_dir: Path, t: TrainerConfig, *, steps: int,
          seed: int = 0, hooks: Sequence = (), use_cpu: bool = True, report_to: str = "none",
          save_dtype: str | None = None, init_optimizer: Path | None = None, keep_optimizer: bool = False) -> dict:
    """Train for exactly ``steps`` optimizer steps, checkpointing into ``work_dir`` and resuming from it;
    save the final model (safetensors) and tokenizer into ``out_dir``. Returns a summary.

    ``rows``: encoded rows, or a stream of them (``forgetting.data.stream.PackedCorpus``: packed rows of a corpus, read
    as training goes). ``t`` is the trainer config (lr, batches, schedule, ...; forgetting/config.py). ``model`` is a
    model, or a
    function that creates one. A peft model (LoRA) is merged into its base weights before saving, so every
    evaluator sees a plain checkpoint. ``hooks``: the method's trainer parts (``forgetting.train.hooks.Hook``:
    its optimizer, a regularizer such as ℓ2). With a ``t.deepspeed`` config (e.g. ZeRO-3) or
    ``t.num_processes > 1``, training runs in worker processes (``forgetting.train.distributed``); ``model`` must
    then be a picklable function, since each worker creates the model itself (under ZeRO-3, already partitioned).
    ``t.packing``: padding-free batches (``forgetting.data.encode.Collator``). ``t.bf16``: bf16 autocast compute,
    the weights (and the optimizer's update of them) stay in the dtype the model has — fp32 master weights for an
    fp32 model. ``save_dtype`` (e.g. ``"bfloat16"``): the saved model is cast to it once, after training (not
    under DeepSpeed, which saves its own 16-bit or fp32 weights). ``init_optimizer``: an ``optimizer.pt`` whose state
    (AdamW's moments and step counts; not its lr or other hyperparameters) the run starts from, as a continued
    pretraining segment does; ``keep_optimizer``: save the final optimizer state as ``optimizer.pt`` beside the
    model (both in one process or data-parallel processes, not under DeepSpeed)."""
    out_dir, work_dir = Path(out_dir), Path(work_dir)
    settings = dict(steps=steps, seed=seed, hooks=list(hooks), use_cpu=use_cpu, save_dtype=save_dtype)
    if t.deepspeed or t.num_processes > 1:
        if t.deepspeed and (init_optimizer is not None or keep_optimizer):
            raise ValueError("init_optimizer / keep_optimizer: not under DeepSpeed, which partitions the optimizer "
                             "state (data-parallel processes hold it whole: rank 0 saves it)")

        launch(model, rows, tokenizer.pad_token_id, out_dir, work_dir, t,
               {**settings, "init_optimizer": init_optimizer, "keep_optimizer": keep_optimizer})
        consolidate(model, out_dir)
        summary = json.loads((out_dir / "train_summary.json").read_text())
    else:
        # imported here: transformers' Trainer brings peft, accelerate, datasets and bitsandbytes with it (seconds),
        # which a run that fails its checks, --plan and --cfg never need (tests/test_layers.py)
        from forgetting.train.fit import fit

        # in-process only: worker processes have no W&B run (their curves reach it from train_log.jsonl)
        summary = fit(model, rows, tokenizer.pad_token_id, out_dir, work_dir, t, **settings, report_to=report_to,
                      init_optimizer=init_optimizer, keep_optimizer=keep_optimizer)
    tokenizer.save_pretrained(str(out_dir))
    if hasattr(rows, "dataset"):  # a stream of packed rows: every token of every step is a document's
        tokens = steps * t.batch_size * t.grad_accum * t.num_processes * rows.seq_len
        summary = {**summary, "tokens": tokens, "processes": t.num_processes}
    else:
        summary = {**summary, "rows": len(rows), "processes": t.num_processes}
    (out_dir / "train_summary.json").write_text(json.dumps(summary, indent=1))
    return summary
