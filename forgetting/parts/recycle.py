"""Recycling a fine-tune across model versions (paper 004): start from the target base plus a diff vector
Δ = (source fine-tune − source base) taken on an older (or newer) version, then fine-tune (recycle-then-FT) or not
(recycling only).

    python launch.py method=recycle 'method.recycle_from=[{pretrain: {steps: 300}}]'           # recycle, then FT
    python launch.py method=recycle method.recycle_train=false 'method.recycle_from=[...]'     # recycling only
    python launch.py method=recycle method.recycle_iterative=true \\
        'method.recycle_from=[{pretrain: {steps: 200}}, {pretrain: {steps: 400}}]'            # Algorithm 1

A version is a set of ``model.*`` overrides (toy: ``pretrain.steps``, with ``pretrain.schedule: constant`` so a
longer run continues a shorter one; hub: ``revision``), written out or named: ``version=v2`` picks
``conf/version/v2.yaml`` for the run's own base, and ``recycle_from: [v1]`` names the same file. The source
fine-tune is the run's own config on the source version with ``recycle_method``'s preset (FT by default; ``cfs`` for a
diff taken from a CFS fine-tune): the same cached artifact as that version's own row. ``recycle_from`` lists the
versions before the target, oldest first: "direct" recycles the last one's own fine-tune; ``recycle_iterative``
makes each fine-tune in the chain start from its predecessor's recycled fine-tune (M*ᵢ = FT(Mᵢ + M*ᵢ₋₁ − Mᵢ₋₁)). The
sum is a ``recycle`` stage (forgetting/merge/diff.py), keyed by (target, source base, source fine-tune, scale).

    pytest tests/merge/test_diff.py
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Optional

from forgetting.errors import ConfigError
from forgetting.merge.diff import add_diff
from forgetting.models import model_dir
from forgetting.parts.base import Init, check_knob, register
from forgetting.presets import option


@dataclass
class RecycleKnobs:
    # source versions, oldest first: names of conf/version/ options, or model overrides ({pretrain: {steps: 300}})
    recycle_from: list[Any] = field(default_factory=list)
    recycle_scale: float = 1.0  # paper 004: plain addition
    recycle_iterative: bool = False
    recycle_train: bool = True  # false: evaluate target + Δ as it is
    recycle_method: str = "ft"  # the source fine-tune's method preset (conf/method/)
    # the source's fine-tuned model as a hub id or local directory (e.g. Meta-Llama-3-8B-Instruct), instead of
    # fine-tuning the source version here
    recycle_tuned: Optional[str] = None

    def __post_init__(self) -> None:
        check_knob(math.isfinite(self.recycle_scale), "recycle_scale", self.recycle_scale,
                   "a finite number (1: plain addition)")
        # options found as method= and version= find them: conf/, or an option on hydra.searchpath
        check_knob(option("method", self.recycle_method) is not None, "recycle_method",
                   self.recycle_method, "a method preset of conf/method/")
        for v in self.recycle_from:
            check_knob(isinstance(v, dict) or option("version", v) is not None, "recycle_from",
                       self.recycle_from, "version names of conf/version/ or dicts of model overrides")


def version_overrides(version) -> dict:
    """A version's model overrides: a dict as given, or the content of the option ``version=<name>``
    (``conf/version/<name>.yaml``)."""
    if isinstance(version, dict):
        return version
    return option("version", version)


def method_preset(schema: type, name: str, **changes):
    """The typed method config (of the run's method ``schema``) of the option ``method=<name>``
    (``conf/method/<name>.yaml``, or one on ``hydra.searchpath``), with ``changes``."""
    from omegaconf import OmegaConf

    node = OmegaConf.merge(OmegaConf.structured(schema), option("method", name))
    return dataclasses.replace(OmegaConf.to_object(node), **changes)


def version_config(c, overrides: dict, method):
    """The run's config on another model version, fine-tuned by ``method``."""
    from omegaconf import OmegaConf

    model = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(c.model), version_overrides(overrides)))
    return dataclasses.replace(c, model=model, method=method)


@register
class Recycle(Init):
    name = "recycle"
    Knobs = RecycleKnobs
    label = "Recycle"
    stage = "recycle"

    def spec(self) -> dict:
        """Only the name: the source (its versions, the method and chain of its fine-tune, the scale) is the
        ``source`` spec, so a direct recycle from a longer list is the same model as from its last version."""
        return {"name": self.name}

    def check(self, config) -> None:

        if not self.knobs.recycle_from:
            raise ConfigError("method.recycle_from=[] is invalid: expected the source versions, oldest first, "
                              "as model overrides (e.g. [{pretrain: {steps: 300}}])")

    def source(self, ctx):
        """(the source's config, its base, the inputs of its fine-tune), built from nothing (``--plan`` reads it)."""
        k, c = self.knobs, ctx.c
        chain = k.recycle_from
        changes = {}
        if k.recycle_iterative and len(chain) > 1:
            changes = {"init": "recycle", "recycle_from": chain[:-1], "recycle_iterative": True,
                       "recycle_train": True, "recycle_scale": k.recycle_scale, "recycle_method": k.recycle_method}
        src = version_config(c, chain[-1], method_preset(type(c.method), k.recycle_method, **changes))
        stages = ctx.stages
        steps = stages.base_chain(src, ctx.world)
        base = ctx.store.planned(*steps[-1]) if steps else stages.hub_artifact(src)
        return src, base, stages.inputs(src, ctx.store, base, ctx.world)

    def source_spec(self, ctx) -> dict:
        src, base, inputs = self.source(ctx)
        tuned = {"hub": self.knobs.recycle_tuned} if self.knobs.recycle_tuned else \
            ctx.store.planned("train", ctx.stages.train_spec(src, inputs))
        return {"target": ctx.base, "source_base": base, "source_tuned": tuned, "scale": self.knobs.recycle_scale}

    def start(self, ctx):

        src, _, _ = self.source(ctx)
        c = ctx.c

        def local(art, cfg):
            return model_dir(cfg.model.path, cfg.model.revision) if art.stage == "hub" else art.path

        def make(out):
            src_base = ctx.stages.base_stage(src, ctx.store, ctx.world)
            tuned = model_dir(self.knobs.recycle_tuned) if self.knobs.recycle_tuned else \
                ctx.stages.train_stage(src, ctx.store, src_base, ctx.world).path
            add_diff(local(ctx.base, c), local(src_base, src), tuned, out, self.knobs.recycle_scale)

        return ctx.store.build(self.stage, self.source_spec(ctx), make)

    def trains(self) -> bool:
        return self.knobs.recycle_train
