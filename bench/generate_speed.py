"""(c) The HF generation backend's tokens/s vs a bare ``model.generate`` loop.

    python -m bench.generate_speed            # ~1-2 min on 2 cores

Model: the toy default architecture (conf/model/toy.yaml), random init, with the toy world's tokenizer. Both sides
sample BATCH BOS-only prompts for NEW_TOKENS new tokens at the paper's CFS settings (T 1.0, top-p 0.95, no top-k),
with the same seed, so they draw the same tokens:
- ours: ``forgetting.generate.hf.HFBackend.sample`` (what the generate stage calls);
- bare: ``torch.manual_seed``; ``model.generate`` on a (BATCH, 1) tensor of BOS; each row cut as ours cuts it.
Rate = generated non-pad tokens (EOS included) / wall time of the call; the calls alternate A B A B ... REPS
times; reported: the median per-pair ratio (and the same by CPU time). Target: ours >= 1.0x bare.
"""
from __future__ import annotations

import torch

from bench.common import interleaved, machine, now, report, since, toy_world, workdir

BATCH, NEW_TOKENS, TEMPERATURE, TOP_P, REPS = 64, 128, 1.0, 0.95, 8


def main() -> None:
    from forgetting.generate.hf import HFBackend
    from forgetting.train.pretrain import make_model

    tmp = workdir("bench-generate-")
    c, _, _, tok = toy_world(tmp / "store")
    torch.manual_seed(0)
    model = make_model(c.model, tok).eval()
    bos, pad, eos = tok.bos_token_id, tok.pad_token_id, tok.eos_token_id
    backend = HFBackend(model, tok)
    print(f"machine: {machine()}")
    print(f"toy model, {BATCH} BOS-only prompts x {NEW_TOKENS} new tokens, T {TEMPERATURE}, top-p {TOP_P}")
    counts: dict[str, list[int]] = {"ours": [], "bare": []}
    seeds = iter(range(10**6))

    def ours():
        seed = next(seeds)
        t = now()
        out = backend.sample([[bos]] * BATCH, temperature=TEMPERATURE, top_p=TOP_P, max_new_tokens=NEW_TOKENS,
                             seed=seed, batch_size=BATCH)
        dt = since(t)
        counts["ours"].append(sum(map(len, out)))
        return counts["ours"][-1], dt

    def bare():
        seed = next(seeds) - 1  # the seed ours just used: the same samples
        t = now()
        torch.manual_seed(seed)
        with torch.no_grad():
            gen = model.generate(input_ids=torch.full((BATCH, 1), bos), attention_mask=torch.ones(BATCH, 1,
                                 dtype=torch.long), do_sample=True, temperature=TEMPERATURE, top_p=TOP_P, top_k=0,
                                 max_new_tokens=NEW_TOKENS, pad_token_id=pad, eos_token_id=eos)[:, 1:]
        # what a sample is: its tokens up to its first EOS (included), or else up to its first PAD (generate pads
        # finished rows; a random model can also sample the PAD id itself)
        n = 0
        for row in gen.tolist():
            n += row.index(eos) + 1 if eos in row else row.index(pad) if pad in row else len(row)
        dt = since(t)
        counts["bare"].append(n)
        return n, dt

    ours(), bare()  # warm-up, not counted
    for k in counts:
        counts[k].clear()
    r = interleaved(ours, bare, REPS, ("ours tok", "bare tok"))
    same = counts["ours"] == counts["bare"]
    print(f"tokens per call: ours {counts['ours']}, bare {counts['bare']} ({'the same' if same else 'DIFFERENT'})")
    report("generate_speed", "HFBackend tok/s / bare generate tok/s", r["ratio"], ">= 1.0", r["ratio"] >= 1.0,
           ratio_cpu=round(r["ratio_cpu"], 3), ours_tok_s=round(r["a"]), bare_tok_s=round(r["b"]), same_tokens=same)


if __name__ == "__main__":
    main()
