"""CFS: context-free samples of the base model, from its BOS token alone (paper §2, Eq. 2; Table 1's BOS).

    python launch.py method=cfs generator.temperature=1.0 generator.top_p=0.95

The rows come from the chunked sample sequence of ``forgetting.generate.sources``; its spec (base model, start
token setting, the sampling settings the backend reads) is this part's contribution to the train key, so a
changed sample is a new model.
"""
from __future__ import annotations

from forgetting.parts.base import Augment, MixKnobs, register


@register
class ContextFree(Augment):
    name = "context_free"
    Knobs = MixKnobs
    label = "CFS"
    needs_bos = True
    generates = True

    def source_spec(self, ctx) -> dict:
        from forgetting.generate.sources import context_free_spec

        m = ctx.c.model
        return context_free_spec(ctx.base, ctx.c.generator, m.dtype, {"token": m.bos_token, "id": m.bos_token_id})

    def rows(self, ctx, n: int) -> list[dict]:
        from forgetting.generate.sources import context_free

        m = ctx.c.model
        return context_free(ctx.store, ctx.base, ctx.c.generator, n, bos_id=ctx.bos_id(), load=ctx.generation_model,
                            model_dtype=m.dtype, bos={"token": m.bos_token, "id": m.bos_token_id})
