"""P: replay of pretraining documents (paper §3; Rolnick et al. 2019), with loss on every token.

    python launch.py method=replay                                     # the toy world's corpus
    python launch.py method=replay replay.source=jsonl replay.path='/data/dolma/*.json.gz'
"""
from __future__ import annotations

from forgetting.data.replay import load_replay_corpus, replay_spec
from forgetting.parts.base import Augment, MixKnobs, register


@register
class Replay(Augment):
    name = "replay"
    Knobs = MixKnobs
    label = "P"

    def source_spec(self, ctx) -> dict:

        return replay_spec(ctx.c.replay, ctx.c.generator.seed, ctx.world)

    def rows(self, ctx, n: int) -> list[dict]:

        return [{"text": t} for t in load_replay_corpus(ctx.c.replay, n, ctx.c.generator.seed, ctx.world, ctx.store)]
