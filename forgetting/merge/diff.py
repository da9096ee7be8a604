"""Diff-vector recycling (paper 004): target + scale·(source_tuned − source_base), computed in fp32 and streamed over
the target's safetensors shards like Wise-FT, each tensor cast back to the target's dtype.

    python launch.py method=recycle 'method.recycle_from=[{pretrain: {steps: 300}}]'

Refused in one line: a tensor missing from one of the three models, shapes that differ (vocabulary growth between
versions is not handled: it would need a rule for the new rows), tokenizers whose vocabularies differ (the three
models' tokenizers are always compared: a model without a readable tokenizer is refused rather than unchecked). The
artifact's ``recycle.json`` holds diagnostics: ‖Δ‖ (the diff), ‖target − source_base‖ (how far apart the
versions are) and the cosine between Δ and that version gap.

    pytest tests/merge/test_diff.py
"""
from __future__ import annotations

import json
import math
import shutil
from contextlib import ExitStack
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from forgetting.merge.wise_ft import INDEX, ShardReader, _shards


def _vocab(model_dir: Path) -> dict:
    """token → id of the model's tokenizer: its tokenizer.json's vocabulary, else what the tokenizer loads to (a
    slow tokenizer, added tokens included); a model with neither is refused — the check is never skipped."""
    path = model_dir / "tokenizer.json"
    if path.exists():
        data = json.loads(path.read_text())
        vocab = data.get("model", {}).get("vocab")
        if isinstance(vocab, dict):
            added = {t["content"]: t["id"] for t in data.get("added_tokens", []) if "content" in t}
            return {**vocab, **added}
        if isinstance(vocab, list):  # Unigram models list [piece, score] pairs: the id is the position
            return {piece[0] if isinstance(piece, list) else piece: i for i, piece in enumerate(vocab)}
    try:
        from transformers import AutoTokenizer

        return dict(AutoTokenizer.from_pretrained(str(model_dir)).get_vocab())
    except Exception as err:  # noqa: BLE001 — any failure to read it is the one-line error below
        raise ValueError(f"recycle: cannot read the tokenizer of {model_dir} ({type(err).__name__}): expected a "
                         "tokenizer beside each model, to check that the diff's rows are the same tokens") from None


CHUNK = 1 << 20  # elements per slice of the diagnostics: no temporary the size of a whole tensor


def _accumulate(sums: dict, t: torch.Tensor, b: torch.Tensor, delta: torch.Tensor) -> None:
    """‖Δ‖², ‖t − b‖² and Δ·(t − b), slice by slice, in float64."""
    t, b, delta = t.reshape(-1), b.reshape(-1), delta.reshape(-1)
    for i in range(0, delta.numel(), CHUNK):
        d = delta[i:i + CHUNK].double()
        g = t[i:i + CHUNK].double() - b[i:i + CHUNK].double()
        sums["diff"] += float(d @ d)
        sums["gap"] += float(g @ g)
        sums["dot"] += float(d @ g)


def add_diff(target_dir: Path, src_base_dir: Path, src_tuned_dir: Path, out_dir: Path, scale: float) -> dict:
    """Write target + scale·(src_tuned − src_base) into ``out_dir`` (target's shards, config and tokenizer);
    return the diagnostics."""
    target_dir, src_base_dir, src_tuned_dir, out_dir = map(Path, (target_dir, src_base_dir, src_tuned_dir, out_dir))
    maps = {"target": _shards(target_dir), "source base": _shards(src_base_dir),
            "source fine-tune": _shards(src_tuned_dir)}
    for name, m in maps.items():
        missing = sorted(set(maps["target"]) - set(m))
        if missing:
            raise ValueError(f"recycle: the {name} has no tensor {missing[0]!r} (and {len(missing) - 1} more): "
                             "expected the three models to share one architecture")
    vocabs = {name: _vocab(d) for name, d in (("target", target_dir), ("source base", src_base_dir),
                                               ("source fine-tune", src_tuned_dir))}
    for name in ("source base", "source fine-tune"):
        if vocabs[name] != vocabs["target"]:
            other = src_base_dir if name == "source base" else src_tuned_dir
            diff = sorted(set(vocabs[name].items()) ^ set(vocabs["target"].items()))[:3]
            raise ValueError(f"recycle: the tokenizers of {target_dir} and {other} ({name}) differ (e.g. "
                             f"{diff}): expected one vocabulary (a diff's embedding rows are per token)")
    sums = {"diff": 0.0, "gap": 0.0, "dot": 0.0}
    for shard in sorted(set(maps["target"].values())):
        out = {}
        with ExitStack() as stack:
            src_base = ShardReader(stack, src_base_dir, maps["source base"])
            src_tuned = ShardReader(stack, src_tuned_dir, maps["source fine-tune"])
            tgt = stack.enter_context(safe_open(str(target_dir / shard), "pt"))
            metadata = tgt.metadata()
            for name in tgt.keys():
                t = tgt.get_tensor(name)
                if torch.is_floating_point(t):
                    b, f = src_base(name), src_tuned(name)
                    if not t.shape == b.shape == f.shape:
                        raise ValueError(f"recycle: {name} has shape {tuple(t.shape)} in the target, "
                                         f"{tuple(b.shape)} / {tuple(f.shape)} in the source base / fine-tune: "
                                         "expected one shape (vocabulary growth is not handled)")
                    # at most three tensors of this size at once (t, b, Δ): f is read into Δ and dropped
                    delta = f.to(torch.float32, copy=True).sub_(b)
                    del f
                    _accumulate(sums, t, b, delta)
                    del b
                    t = delta.mul_(scale).add_(t).to(t.dtype)
                out[name] = t.contiguous()
        save_file(out, str(out_dir / shard), metadata=metadata or {"format": "pt"})
    for p in target_dir.iterdir():  # config, generation config, tokenizer, shard index: the target's
        if p.is_file() and p.suffix != ".safetensors" and p.name not in ("train_log.jsonl", "train_summary.json",
                                                                          "optimizer.pt", "manifest.json"):
            shutil.copy2(p, out_dir / p.name)
    if (target_dir / INDEX).exists():
        shutil.copy2(target_dir / INDEX, out_dir / INDEX)
    diff, gap = math.sqrt(sums["diff"]), math.sqrt(sums["gap"])
    info = {"scale": scale, "diff_norm": diff, "version_gap_norm": gap,
            "cos_diff_gap": sums["dot"] / (diff * gap) if diff > 0 and gap > 0 else None}
    (out_dir / "recycle.json").write_text(json.dumps(info, indent=1))
    return info
