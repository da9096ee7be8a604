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


class ShardReader:
    """A model's tensors by name, each shard memory-mapped once and closed with ``stack`` — opened per output shard,
    so closing them unmaps the pages read and resident memory stays near one shard per model."""

    def __init__(self, stack: ExitStack, model_dir: Path, weight_map: dict[str, str]):
        self.stack, self.dir, self.map, self.files = stack, Path(model_dir), weight_map, {}

    def __call__(self, name: str) -> torch.Tensor:
        part = self.map[name]
        if part not in self.files:
            self.files[part] = self.stack.enter_context(safe_open(str(self.dir / part), "pt"))
        return self.files[part].get_tensor(name)


def wise_ft(base_dir: Path, ft_dir: Path, out_dir: Path, alpha: float) -> None:
    base_dir, ft_dir, out_dir = Path(base_dir), Path(ft_dir), Path(out_dir)
    base_map, ft_map = _shards(base_dir), _shards(ft_dir)
    missing = sorted(set(ft_map) - set(base_map))
    if missing:
        raise ValueError(f"Wise-FT: the base model has no tensor {missing[0]!r} (and {len(missing) - 1} more): "
                         "the fine-tuned model must have the base model's architecture")
    for shard in sorted(set(ft_map.values())):
        merged = {}
        with ExitStack() as stack:
            base_tensor = ShardReader(stack, base_dir, base_map)
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
