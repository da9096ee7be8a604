"""Replay corpus (P): a seeded, prefix-stable subsample of the pretraining corpus, streamed like the hub."""
from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest

from forgetting.config import ReplayConfig
from forgetting.data.replay import load_replay_corpus

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
DOLMA = FIXTURES / "dolma.jsonl"
TEXTS = [json.loads(line)["text"] for line in open(DOLMA)]


def test_local_jsonl_gives_a_seeded_prefix_stable_subsample():
    cfg = ReplayConfig(source="jsonl", path=str(DOLMA))
    big = load_replay_corpus(cfg, 7, seed=3)
    assert len(big) == 7 and len(set(big)) == 7 and set(big) <= set(TEXTS)
    for n in (1, 4, 6):
        assert load_replay_corpus(cfg, n, seed=3) == big[:n]
    assert load_replay_corpus(cfg, 7, seed=3) == big  # deterministic
    assert load_replay_corpus(cfg, 10, seed=3) != load_replay_corpus(cfg, 10, seed=4)  # the seed shuffles
    assert sorted(load_replay_corpus(cfg, 10, seed=4)) == sorted(TEXTS)  # a permutation, no row lost


def test_max_rows_caps_the_pool_and_larger_n_repeats_it():
    cfg = ReplayConfig(source="jsonl", path=str(DOLMA), max_rows=3)
    rows = load_replay_corpus(cfg, 8, seed=0)
    assert len(rows) == 8 and len(set(rows)) == 3 and rows[3:6] == rows[:3]
    assert load_replay_corpus(cfg, 2, seed=0) == rows[:2]
    assert load_replay_corpus(cfg, 0, seed=0) == []


def test_hub_path_streams_the_same_rows_as_the_file(tmp_path):
    # a local directory goes through the hub-id branch: load_dataset(path, subset, split=..., streaming=True)
    repo = tmp_path / "dolma_repo"
    (repo / "data").mkdir(parents=True)
    shutil.copy(DOLMA, repo / "data" / "train.jsonl")
    hub = ReplayConfig(source="hf", path=str(repo), split="train")
    rows = load_replay_corpus(hub, 5, seed=11)
    assert rows == load_replay_corpus(ReplayConfig(source="jsonl", path=str(DOLMA)), 5, seed=11)
    assert load_replay_corpus(hub, 3, seed=11) == rows[:3]
    # a data-file path with source=hf (Dolma's .json.gz URLs) takes the json builder, still streamed
    assert load_replay_corpus(ReplayConfig(source="hf", path=str(DOLMA)), 5, seed=11) == rows


def test_missing_text_field_is_named():
    with pytest.raises(ValueError, match=r"replay.text_field 'content' not in .*dolma.jsonl: it has \['added', "
                                         r"'created', 'id', 'source', 'text'\]"):
        load_replay_corpus(ReplayConfig(source="jsonl", path=str(DOLMA), text_field="content"), 2, seed=0)


def test_toy_world_corpus_keeps_the_existing_replay_order(tmp_path):
    corpus = [f"document number {i}." for i in range(25)]
    (tmp_path / "corpus.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in corpus))
    cfg = ReplayConfig()
    rows = load_replay_corpus(cfg, 40, seed=5, world=tmp_path)
    assert load_replay_corpus(cfg, 12, seed=5, world=tmp_path) == rows[:12]
    order = list(range(25))
    random.Random("replay:5").shuffle(order)
    assert rows[:25] == [corpus[i] for i in order]
    assert rows[25:] == rows[:15]  # past the corpus size the pool repeats, in the same order
    with pytest.raises(ValueError, match="world"):
        load_replay_corpus(cfg, 3, seed=5)


SIZES = (2000, 4000, 8000, 16000)  # 30K rows in 4 shards: more than a 10K-row shuffle buffer holds


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> str:
    """A local multi-shard source of different shard sizes; row ``"s:i"`` is row i of shard s."""
    root = tmp_path_factory.mktemp("shards")
    for s, size in enumerate(SIZES):
        (root / f"part-{s}.jsonl").write_text("".join(json.dumps({"text": f"{s}:{i}"}) + "\n" for i in range(size)))
    return str(root / "part-*.jsonl")


def test_a_multi_shard_source_gives_a_uniform_subsample(shards):
    """Every shard contributes in proportion to its size, and from all of its rows (not its first ones)."""
    k, total = 3000, sum(SIZES)
    for seed in (0, 1):
        rows = load_replay_corpus(ReplayConfig(source="jsonl", path=shards), k, seed=seed)
        assert len(rows) == len(set(rows)) == k  # without replacement
        drawn = [tuple(map(int, r.split(":"))) for r in rows]
        counts = [sum(s == shard for s, _ in drawn) for shard in range(len(SIZES))]
        expected = [k * size / total for size in SIZES]
        chi2 = sum((o - e) ** 2 / e for o, e in zip(counts, expected))
        assert chi2 < 16.27, (seed, counts, expected)  # the 0.999 quantile of χ² with 3 degrees of freedom
        for shard, size in enumerate(SIZES):  # positions within each shard: uniform on [0, 1), mean 1/2
            pos = [i / size for s, i in drawn if s == shard]
            assert abs(sum(pos) / len(pos) - 0.5) < 4 * 0.289 / len(pos) ** 0.5, (seed, shard)
        # the order is random too: the first rows are not one shard's
        assert len({s for s, _ in drawn[:40]}) == len(SIZES)


def test_a_multi_shard_subsample_is_seeded_and_prefix_stable(shards):
    cfg = ReplayConfig(source="jsonl", path=shards)
    big = load_replay_corpus(cfg, 500, seed=7)
    assert load_replay_corpus(cfg, 120, seed=7) == big[:120]  # a ratio grid shares its rows
    assert load_replay_corpus(cfg, 500, seed=7) == big
    other = load_replay_corpus(cfg, 500, seed=8)
    assert len(set(other) & set(big)) < 50  # two independent 500-row draws from 30K share ≈ 8 rows


def test_the_pipeline_reads_a_file_source_once_per_seed(shards, store_copy, monkeypatch):
    """The ``max_rows`` sample is stored: a ratio grid (and a rerun) reuses it instead of re-reading the source,
    and gives the rows a direct call gives."""
    from conftest import compose

    import forgetting.data.replay as replay
    from forgetting.pipeline import base_stage, generate_stage, world_stage
    from forgetting.store import Store

    passes = []
    sample = replay.uniform_sample
    monkeypatch.setattr(replay, "uniform_sample", lambda *a: passes.append(a[1]) or sample(*a))
    c = compose("debug=micro", f"store_dir={store_copy}", "method=replay", "replay.source=jsonl",
                f"replay.path={shards}", "replay.max_rows=400")
    store = Store(store_copy)
    world = world_stage(c, store)
    base = base_stage(c, store, world)
    small = generate_stage(c, store, base, world, [], 100)
    big = generate_stage(c, store, base, world, [], 600)  # past max_rows: the 400 rows repeat
    assert passes == [400]
    assert [r["text"] for r in big] == load_replay_corpus(c.replay, 600, seed=c.generator.seed)
    assert small == big[:100] and big[400:] == big[:200]
