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
    rows = load_replay_corpus(cfg, 40, seed=5, world_dir=tmp_path)
    assert load_replay_corpus(cfg, 12, seed=5, world_dir=tmp_path) == rows[:12]
    order = list(range(25))
    random.Random("replay:5").shuffle(order)
    assert rows[:25] == [corpus[i] for i in order]
    assert rows[25:] == rows[:15]  # past the corpus size the pool repeats, in the same order
    with pytest.raises(ValueError, match="world"):
        load_replay_corpus(cfg, 3, seed=5)
