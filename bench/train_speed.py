"""(a) The train stage's tokens/s vs a bare PyTorch loop: same model, rows, batches, optimizer and steps.

    python -m bench.train_speed            # ~2 min on 2 cores

Model: the toy default architecture (conf/model/toy.yaml), random init, fp32. Rows: the toy world's CFS mix at
ratio 1.0 (downstream rows + as many context-free stand-ins, bench/common.py). Both sides run STEPS steps of
batch 32 with torch AdamW, the cosine schedule with warmup, and gradient clipping at 1.0 (HF Trainer's default
``max_grad_norm``, so the two sides compute the same update); they see the same batches in the same order (the
order ``train()`` drew, recorded from its dataset accesses).
- ours: ``forgetting.train.trainer.train()`` (HF Trainer + WeightedTrainer loss, logging every 10 steps,
  a checkpoint after step SAVE_AT);
- bare: collate -> forward -> weighted loss -> backward -> clip -> step -> schedule -> zero_grad.
The two run in lockstep, step by step (A B A B ...), in one process: after each of the Trainer's steps, a callback
runs the bare loop's step on the same batch, so a burst of load from another process hits both alike. Ours' step
time runs from the end of the bare step before to the Trainer's ``on_step_end`` (data loading, logging and
checkpointing included); the bare step's from its collate to its ``zero_grad``. Reported: the median over steps
WARMUP+1..STEPS of the per-step ratio of rates (non-pad tokens / step time); one-time setup (model creation, data
loader, the final save) is excluded. The one checkpoint's cost is printed separately, as a share of a run at
trainer.save_steps. Target: ours >= 0.95x bare.
"""
from __future__ import annotations

import contextlib
import io
import statistics

import torch
import torch.nn.functional as F

from bench.common import machine, now, quartiles, report, since, toy_world, training_mix, workdir

STEPS, WARMUP, BATCH, LR, SAVE_AT = 40, 3, 32, 1e-3, 20


class Recorded(list):
    """The rows, remembering the order the trainer reads them in."""

    def __init__(self, rows):
        super().__init__(rows)
        self.order: list[int] = []

    def __getitem__(self, i):
        self.order.append(i)
        return super().__getitem__(i)


def main() -> None:
    from transformers import TrainerCallback, get_cosine_schedule_with_warmup

    import forgetting.train.trainer as trainer_module
    from forgetting.data.encode import IGNORE, Collator
    from forgetting.toy.pretrain import make_model

    tmp = workdir("bench-train-")
    c, _, world, tok = toy_world(tmp / "store")
    rows = Recorded(training_mix(c, world, tok, ratio=1.0))
    collate = Collator(tok.pad_token_id)
    print(f"machine: {machine()}")
    print(f"toy model {sum(p.numel() for p in make_model(c.model, tok).parameters()):,} params; {len(rows)} rows; "
          f"{STEPS} steps of {BATCH}, timed after {WARMUP}", flush=True)

    torch.manual_seed(0)
    bare_model = make_model(c.model, tok).train()
    bare_model.config.use_cache = False  # as the Trainer sets it
    opt = torch.optim.AdamW(bare_model.parameters(), lr=LR, weight_decay=0.0)  # trainer.weight_decay
    sched = get_cosine_schedule_with_warmup(opt, round(c.trainer.warmup_ratio * STEPS), STEPS)

    def bare_step(batch: dict) -> None:
        weight, labels = batch.pop("loss_weight"), batch.pop("labels")
        logits = bare_model(**batch).logits[:, :-1].float()
        ce = F.cross_entropy(logits.reshape(-1, logits.size(-1)), labels[:, 1:].reshape(-1),
                             ignore_index=IGNORE, reduction="none")
        loss = (ce * weight[:, 1:].reshape(-1)).sum() / (labels[:, 1:] != IGNORE).sum()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(bare_model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)

    ours_end, bare_s, resumed, tokens = [], [], [], []  # (wall, CPU) pairs

    class Lockstep(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if not resumed:
                resumed.append(now())

        def on_step_end(self, args, state, control, **kwargs):
            ours_end.append(now())
            s = state.global_step - 1
            idx = rows.order[s * BATCH:(s + 1) * BATCH]  # the batch the Trainer just trained on
            assert len(idx) == BATCH
            batch = [list.__getitem__(rows, i) for i in idx]
            tokens.append(sum(len(r["input_ids"]) for r in batch))
            t = now()
            bare_step(collate(batch))
            bare_s.append(since(t))
            resumed.append(now())

    class LockstepTrainer(trainer_module.WeightedTrainer):
        """The trainer train() builds, plus the lockstep callback."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.add_callback(Lockstep())

    trainer_module.WeightedTrainer = LockstepTrainer
    torch.manual_seed(0)
    model = make_model(c.model, tok)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):  # log lines
        trainer_module.train(model, tok, rows, tmp / "out", tmp / "work", steps=STEPS, lr=LR, batch_size=BATCH,
                             warmup_ratio=c.trainer.warmup_ratio, scheduler="cosine", save_steps=SAVE_AT,
                             logging_steps=10, seed=0)
    assert len(ours_end) == STEPS
    with torch.no_grad():
        drift = max(float((p - q).abs().max()) for p, q in zip(model.parameters(), bare_model.parameters()))
    print(f"same work: after {STEPS} steps the two models' weights differ by at most {drift:.1e}")
    ours_s = [(e[0] - r[0], e[1] - r[1]) for e, r in zip(ours_end, resumed)]
    timed = [s for s in range(WARMUP, STEPS) if s != SAVE_AT]  # step SAVE_AT + 1 carries the checkpoint
    ratios = [bare_s[s][0] / ours_s[s][0] for s in timed]  # same batch: the tokens cancel
    ratios_cpu = [bare_s[s][1] / ours_s[s][1] for s in timed]
    ratio = statistics.median(ratios)
    n = sum(tokens[s] for s in timed)
    ours_rate, bare_rate = (n / sum(x[s][0] for s in timed) for x in (ours_s, bare_s))
    print(f"{len(timed)} timed steps, {n:,} tokens: ours {ours_rate:,.0f} tok/s, bare {bare_rate:,.0f} tok/s (ratio "
          f"of totals {ours_rate / bare_rate:.3f}); per-step ratios: median {ratio:.3f}, quartiles "
          f"{quartiles(ratios)}; by CPU time: median {statistics.median(ratios_cpu):.3f}, quartiles "
          f"{quartiles(ratios_cpu)}")
    step = statistics.median(ours_s[s][0] for s in timed)
    save_s = ours_s[SAVE_AT][0] - step * tokens[SAVE_AT] / statistics.median(tokens[s] for s in timed)
    share = 100 * save_s / (c.trainer.save_steps * step)
    print(f"a checkpoint costs {save_s:.2f} s (a step {step:.2f} s): {share:.1f}% of a run at "
          f"trainer.save_steps={c.trainer.save_steps}")
    report("train_speed", "train stage tok/s / bare loop tok/s", ratio, ">= 0.95", ratio >= 0.95,
           ratio_cpu=round(statistics.median(ratios_cpu), 3), ours_tok_s=round(ours_rate),
           bare_tok_s=round(bare_rate), checkpoint_s=round(save_s, 3))


if __name__ == "__main__":
    main()
