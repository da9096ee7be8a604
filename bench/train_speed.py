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


def lockstep(make_model, tok, rows: list[dict], tmp, *, steps: int, batch: int, lr: float, warmup_ratio: float,
             save_at: int, bf16: bool = False) -> dict:
    """Train ``make_model()`` with ``train()`` and a second ``make_model()`` with the bare loop, step by step on the
    same batches (module docstring). Returns each step's (wall, CPU) seconds for both sides, its non-pad tokens and
    its padded tokens (what the model computes), and the largest weight difference between the two models."""
    from transformers import TrainerCallback, get_cosine_schedule_with_warmup

    import forgetting.train.fit as fit_module
    import forgetting.train.trainer as trainer_module
    from forgetting.config import TrainerConfig
    from forgetting.data.encode import IGNORE, Collator

    rows = Recorded(rows)
    collate = Collator(tok.pad_token_id)
    torch.manual_seed(0)
    bare_model = make_model().train()
    bare_model.config.use_cache = False  # as the Trainer sets it
    opt = torch.optim.AdamW(bare_model.parameters(), lr=lr, weight_decay=0.0)  # trainer.weight_decay
    sched = get_cosine_schedule_with_warmup(opt, round(warmup_ratio * steps), steps)

    def bare_step(batch: dict) -> None:
        weight, labels = batch.pop("loss_weight"), batch.pop("labels")
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):  # the Trainer's bf16=True on CPU
            logits = bare_model(**batch).logits[:, :-1].float()
        ce = F.cross_entropy(logits.reshape(-1, logits.size(-1)), labels[:, 1:].reshape(-1),
                             ignore_index=IGNORE, reduction="none")
        loss = (ce * weight[:, 1:].reshape(-1)).sum() / (labels[:, 1:] != IGNORE).sum()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(bare_model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)

    ours_end, bare_s, resumed, tokens, computed = [], [], [], [], []  # (wall, CPU) pairs; tokens per step

    class Lockstep(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if not resumed:
                resumed.append(now())

        def on_step_end(self, args, state, control, **kwargs):
            ours_end.append(now())
            s = state.global_step - 1
            idx = rows.order[s * batch:(s + 1) * batch]  # the batch the Trainer just trained on
            assert len(idx) == batch
            lengths = [len(list.__getitem__(rows, i)["input_ids"]) for i in idx]
            tokens.append(sum(lengths))
            computed.append(batch * max(lengths))  # padded to the longest row
            t = now()
            bare_step(collate([list.__getitem__(rows, i) for i in idx]))
            bare_s.append(since(t))
            resumed.append(now())

    class LockstepTrainer(fit_module.WeightedTrainer):
        """The trainer train() builds, plus the lockstep callback."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.add_callback(Lockstep())

    plain = fit_module.WeightedTrainer
    fit_module.WeightedTrainer = LockstepTrainer
    torch.manual_seed(0)
    model = make_model()
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):  # log lines
            t = TrainerConfig(lr=lr, batch_size=batch, warmup_ratio=warmup_ratio, scheduler="cosine",
                              save_steps=save_at, logging_steps=10, bf16=bf16)
            trainer_module.train(model, tok, rows, tmp / "out", tmp / "work", t, steps=steps, seed=0)
    finally:
        fit_module.WeightedTrainer = plain
    assert len(ours_end) == steps
    with torch.no_grad():
        drift = max(float((p - q).abs().max()) for p, q in zip(model.parameters(), bare_model.parameters()))
    ours_s = [(e[0] - r[0], e[1] - r[1]) for e, r in zip(ours_end, resumed)]
    return {"ours": ours_s, "bare": bare_s, "tokens": tokens, "computed": computed, "drift": drift}


def summarize(run: dict, timed: list[int]) -> dict:
    """Print and return the per-step ratios (bare step time / ours: same batch, so the tokens cancel) and the
    rates over the timed steps."""
    ours_s, bare_s, tokens = run["ours"], run["bare"], run["tokens"]
    ratios = [bare_s[s][0] / ours_s[s][0] for s in timed]
    ratios_cpu = [bare_s[s][1] / ours_s[s][1] for s in timed]
    n = sum(tokens[s] for s in timed)
    ours_rate, bare_rate = (n / sum(x[s][0] for s in timed) for x in (ours_s, bare_s))
    print(f"{len(timed)} timed steps, {n:,} tokens: ours {ours_rate:,.0f} tok/s, bare {bare_rate:,.0f} tok/s (ratio "
          f"of totals {ours_rate / bare_rate:.3f}); per-step ratios: median {statistics.median(ratios):.3f}, "
          f"quartiles {quartiles(ratios)}; by CPU time: median {statistics.median(ratios_cpu):.3f}, quartiles "
          f"{quartiles(ratios_cpu)}", flush=True)
    return {"ratio": statistics.median(ratios), "ratio_cpu": statistics.median(ratios_cpu), "ours_tok_s": ours_rate,
            "bare_tok_s": bare_rate}


def main() -> None:
    from forgetting.train.pretrain import make_model

    tmp = workdir("bench-train-")
    c, _, world, tok = toy_world(tmp / "store")
    rows = training_mix(c, world, tok, ratio=1.0)
    print(f"machine: {machine()}")
    print(f"toy model {sum(p.numel() for p in make_model(c.model, tok).parameters()):,} params; {len(rows)} rows; "
          f"{STEPS} steps of {BATCH}, timed after {WARMUP}", flush=True)
    run = lockstep(lambda: make_model(c.model, tok), tok, rows, tmp, steps=STEPS, batch=BATCH, lr=LR,
                   warmup_ratio=c.trainer.warmup_ratio, save_at=SAVE_AT)
    print(f"same work: after {STEPS} steps the two models' weights differ by at most {run['drift']:.1e}")
    timed = [s for s in range(WARMUP, STEPS) if s != SAVE_AT]  # step SAVE_AT + 1 carries the checkpoint
    r = summarize(run, timed)
    ours_s, tokens = run["ours"], run["tokens"]
    step = statistics.median(ours_s[s][0] for s in timed)
    save_s = ours_s[SAVE_AT][0] - step * tokens[SAVE_AT] / statistics.median(tokens[s] for s in timed)
    share = 100 * save_s / (c.trainer.save_steps * step)
    print(f"a checkpoint costs {save_s:.2f} s (a step {step:.2f} s): {share:.1f}% of a run at "
          f"trainer.save_steps={c.trainer.save_steps}")
    report("train_speed", "train stage tok/s / bare loop tok/s", r["ratio"], ">= 0.95", r["ratio"] >= 0.95,
           ratio_cpu=round(r["ratio_cpu"], 3), ours_tok_s=round(r["ours_tok_s"]), bare_tok_s=round(r["bare_tok_s"]),
           checkpoint_s=round(save_s, 3))


if __name__ == "__main__":
    main()
