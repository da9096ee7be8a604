"""Wise-FT: θ = α·θ_base + (1 − α)·θ_ft, streamed over safetensors shards.

    python launch.py method=wise_ft method.alpha=0.5

Tensors are read one at a time (memory-mapped) and written one output shard at a time, so merging an 8B model
never holds two models in memory. An α grid reuses the one fine-tuned checkpoint (its train key ignores α).
"""
from __future__ import annotations

import json
import shutil
from contextlib import ExitStack
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

INDEX = "model.safetensors.index.json"


def _shards(model_dir: Path) -> dict[str, str]:
    """tensor name → shard file name."""
    if (model_dir / INDEX).exists():
        return json.loads((model_dir / INDEX).read_text())["weight_map"]
    with safe_open(str(model_dir / "model.safetensors"), "pt") as f:
        return {k: "model.safetensors" for k in f.keys()}


def wise_ft(base_dir: Path, ft_dir: Path, out_dir: Path, alpha: float) -> None:
    base_dir, ft_dir, out_dir = Path(base_dir), Path(ft_dir), Path(out_dir)
    base_map, ft_map = _shards(base_dir), _shards(ft_dir)
    missing = sorted(set(ft_map) - set(base_map))
    if missing:
        raise ValueError(f"Wise-FT: the base model has no tensor {missing[0]!r} (and {len(missing) - 1} more): "
                         "the fine-tuned model must have the base model's architecture")
    for shard in sorted(set(ft_map.values())):
        merged = {}
        # the base shards are opened for this output shard only: closing them unmaps the pages read from them, so
        # resident memory stays near one shard of each model instead of growing to the whole base model
        with ExitStack() as stack:
            base_files: dict[str, object] = {}  # memory-mapped handles, opened once each per output shard

            def base_tensor(name: str) -> torch.Tensor:
                part = base_map[name]
                if part not in base_files:
                    base_files[part] = stack.enter_context(safe_open(str(base_dir / part), "pt"))
                return base_files[part].get_tensor(name)

            ft = stack.enter_context(safe_open(str(ft_dir / shard), "pt"))
            metadata = ft.metadata()
            for name in ft.keys():
                f = ft.get_tensor(name)
                if torch.is_floating_point(f):
                    b = base_tensor(name)
                    # one fp32 copy, updated in place: no further temporaries the size of the tensor; stored in the
                    # wider of the two dtypes (a bf16 fine-tune of an fp32 hub base), so both endpoints are exact
                    m = f.to(torch.float32, copy=True).mul_(1 - alpha).add_(b.float(), alpha=alpha)
                    f = m.to(torch.promote_types(f.dtype, b.dtype))
                merged[name] = f
        save_file(merged, str(out_dir / shard), metadata=metadata or {"format": "pt"})
        del merged
    for p in ft_dir.iterdir():  # config, tokenizer, generation config, shard index
        if p.is_file() and not p.name.endswith(".safetensors") and p.name != "manifest.json":
            shutil.copy2(p, out_dir / p.name)
