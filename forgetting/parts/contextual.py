"""CS: the base model's own answers to the fine-tuning prompts, at ``generator.contextual_temperature`` (paper §2).

    python launch.py method=cs
"""
from __future__ import annotations

from forgetting.generate.sources import contextual, contextual_spec
from forgetting.parts.base import Augment, MixKnobs, register


@register
class Contextual(Augment):
    name = "contextual"
    Knobs = MixKnobs
    label = "CS"
    generates = True

    def source_spec(self, ctx) -> dict:

        return contextual_spec(ctx.base, ctx.c.generator, ctx.c.model.dtype, ctx.prompts_key())

    def rows(self, ctx, n: int) -> list[dict]:

        return contextual(ctx.store, ctx.base, ctx.c.generator, n, prompts=ctx.prompts(),
                          prompts_key=ctx.prompts_key(), load=ctx.generation_model, model_dtype=ctx.c.model.dtype)
