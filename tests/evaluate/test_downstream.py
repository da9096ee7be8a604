"""Your own task's grading: the answer extracted by dataset.answer_pattern, compared like GSM8K's strict match.

    pytest tests/evaluate/test_downstream.py
"""
from __future__ import annotations

import pytest
from conftest import ROOT, compose

from forgetting.evaluate.graders import AnswerPatternGrader

DEFAULT = compose().dataset.answer_pattern  # MetaMathQA's "The answer is: X"
METAMATHQA = ROOT / "tests" / "fixtures" / "metamathqa.jsonl"


@pytest.mark.parametrize("generation,reference,extracted,correct", [
    ("So 3 + 4 = 7.\nThe answer is: 7", "The answer is: 7", "7", True),
    ("The answer is: 1,000.", "The answer is: 1000", "1,000.", True),  # thousands comma, final period
    ("The answer is: $18", "The answer is: 18.0", "$18", True),  # numbers compare by value
    ("The answer is: 8", "The answer is: 7", "8", False),
    ("The answer is: -7", "The answer is: 7", "-7", False),
    ("The answer is: 7 The answer is: 8", "The answer is: 8", "7 The answer is: 8", False),  # the first match
    ("The answer is 7", "The answer is: 7", None, False),  # no colon: no answer, never a match
    ("The answer is:   Lamo  ", "The answer is: Lamo", "Lamo", True),
    ("The answer is: lamo", "The answer is: Lamo", "lamo", False),  # words as written
    ("The answer is: \\frac{1}{2}", "The answer is: \\frac{1}{2}", "\\frac{1}{2}", True),
    ("", "The answer is: 7", None, False),
])
def test_default_pattern_extracts_and_compares(generation, reference, extracted, correct):
    result = AnswerPatternGrader(DEFAULT).score(generation, {"response": reference})
    assert (result["extracted"], result["correct"]) == (extracted, correct)
    assert result["gold"] == reference.split(": ", 1)[1].strip()


def test_a_pattern_without_group_takes_the_whole_match_and_applies_to_both_sides():
    grader = AnswerPatternGrader(r"[a-z](?: [a-z])+")  # "reverse these letters": the first run of spaced letters
    assert grader.score("Reversed: o m a k", {"response": "k a m o -> o m a k"}) == {
        "extracted": "o m a k", "gold": "k a m o", "correct": False}
    assert grader.score("o m a k", {"response": "o m a k"})["correct"]


def test_greedy_decoding_ignores_the_seed(micro_store):
    from forgetting.generate.hf import HFBackend
    from forgetting.pipeline import base_stage, world_stage
    from forgetting.runtime import load, prompt_ids
    from forgetting.store import Store

    c = compose("debug=micro", f"store_dir={micro_store}")
    store = Store(micro_store)
    model, tok = load(c, base_stage(c, store, world_stage(c, store)))
    prompts = [prompt_ids(tok, c, q) for q in ("What is 2 + 3?", "What is the capital?")]
    greedy = [HFBackend(model, tok).sample(prompts, temperature=0.0, top_p=1.0, max_new_tokens=8, seed=s,
                                           batch_size=2) for s in (0, 1)]
    assert greedy[0] == greedy[1] and all(greedy[0])
    sampled = [HFBackend(model, tok).sample(prompts, temperature=1.0, top_p=1.0, max_new_tokens=8, seed=s,
                                            batch_size=2) for s in (0, 1)]
    assert sampled[0] != sampled[1]  # sampling does depend on the seed: greedy above is not sampling


def test_the_test_split_changes_the_evaluation_key_only_where_it_is_set():
    from forgetting.data.datasets import downstream_spec

    plain = compose("dataset=jsonl", f"dataset.path={METAMATHQA}")
    scored = compose("dataset=jsonl", f"dataset.path={METAMATHQA}", f"dataset.test_path={METAMATHQA}",
                     "dataset.answer_pattern=answer")
    # training and generation keys: unchanged
    assert downstream_spec(plain.dataset, None) == downstream_spec(scored.dataset, None)
    assert not {"test_path", "test_split", "answer_pattern"} & set(downstream_spec(scored.dataset, None))
