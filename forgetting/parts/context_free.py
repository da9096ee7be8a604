"""CFS: context-free samples of the base model, from its BOS token alone (paper §2, Eq. 2; Table 1's BOS), or from
a declared mixture of start tokens (``method.starts``).

    python launch.py method=cfs generator.temperature=1.0 generator.top_p=0.95
    python launch.py +experiment=smollm2 method=cfs \\
        'method.starts=[{weight: 1}, {token: "<|endoftext|>", weight: 1}]'   # half from BOS, half from <|endoftext|>

The rows come from the chunked sample sequence of ``forgetting.generate.sources``; its spec (base model, start
token setting, the sampling settings the backend reads) is this part's contribution to the train key, so a
changed sample is a new model. A start mixture assigns each row its start in proportion to the weights
(``forgetting.generate.sources.start_sequence``), recorded in the row; an entry with neither ``token`` nor ``id`` is
the model's BOS. The held-out samples of ``pre/base_samples/kl`` follow the same mixture unless
``eval.base_samples_starts`` declares another (forgetting/evaluate/evaluators.py).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from forgetting.config import StartToken
from forgetting.errors import ConfigError
from forgetting.generate.sources import context_free, context_free_spec
from forgetting.models import bos_token_id
from forgetting.parts.base import Augment, MixKnobs, register


@dataclass
class ContextFreeKnobs(MixKnobs):
    # the start tokens of the samples and their shares; []: the model's BOS alone (paper §2)
    starts: list[StartToken] = field(default_factory=list)


def starts_spec(starts: list) -> list[dict]:
    """``method.starts`` as it enters keys: [] (the BOS alone, the keys made before mixtures existed) or the list."""
    return [asdict(s) if not isinstance(s, dict) else dict(s) for s in starts]


def resolve_starts(tokenizer, starts: list, bos_id: int) -> list[tuple[int, float]]:
    """(token id, weight) of each declared start; an entry with neither token nor id is ``bos_id``."""

    out = []
    for s in starts:
        if s.token is None and s.id is None:
            out.append((bos_id, float(s.weight)))
            continue
        try:
            out.append((bos_token_id(tokenizer, s.id, s.token), float(s.weight)))
        except ConfigError as err:
            raise ConfigError(str(err).replace("model.bos_token", "method.starts[].token", 1)
                              .replace("model.bos_token_id", "method.starts[].id", 1)) from None
    return out


@register
class ContextFree(Augment):
    name = "context_free"
    Knobs = ContextFreeKnobs
    label = "CFS"
    needs_bos = True
    generates = True

    def spec(self) -> dict:
        spec = super().spec()
        if not self.knobs.starts:  # keys made before start mixtures existed stay valid
            spec.pop("starts")
        else:
            spec["starts"] = starts_spec(self.knobs.starts)
        return spec

    def source_spec(self, ctx) -> dict:

        m = ctx.c.model
        return context_free_spec(ctx.base, ctx.c.generator, m.dtype, {"token": m.bos_token, "id": m.bos_token_id},
                                 starts_spec(self.knobs.starts))

    def rows(self, ctx, n: int) -> list[dict]:

        m, bos = ctx.c.model, ctx.bos_id()
        return context_free(ctx.store, ctx.base, ctx.c.generator, n, bos_id=bos, load=ctx.generation_model,
                            model_dtype=m.dtype, bos={"token": m.bos_token, "id": m.bos_token_id},
                            starts=resolve_starts(ctx.tokenizer(), self.knobs.starts, bos),
                            starts_spec=starts_spec(self.knobs.starts))
