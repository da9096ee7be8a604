"""Generative evaluation: benchmark loaders on fixtures in the hub schemas, prompts, grading end to end through a
scripted backend, and the real micro toy model through HFBackend."""
from __future__ import annotations

import base64
import copy
import json
import math
import os
import pickle
import zlib
from pathlib import Path

import pytest
from conftest import compose

from forgetting.config import BenchmarkConfig
from forgetting.data.jsonl import read_jsonl
from forgetting.evaluate.benchmarks import THINK, build_prompt, decode_private_tests, load_problems, user_text
from forgetting.evaluate.generative import evaluate_generative
from forgetting.models import load_tokenizer

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "benchmarks"
R1_LIKE = ("{{ bos_token }}{% for m in messages %}<|User|>{{ m['content'] }}{% endfor %}"
           "{% if add_generation_prompt %}<|Assistant|>{% endif %}")
KIND_OF = {"aime24": "math", "math500": "math", "gpqa_diamond": "gpqa", "livecodebench": "livecodebench",
         "medqa": "medical_mc", "medbullets_op4": "medical_mc", "medbullets_op5": "medical_mc"}


def bench(name: str, **kw) -> BenchmarkConfig:
    kw.setdefault("group", "down" if KIND_OF[name] == "medical_mc" else "pre")
    return BenchmarkConfig(name=name, kind=KIND_OF[name], path=str(FIXTURES / f"{name}.jsonl"), **kw)


def raw(name: str) -> list[dict]:
    return read_jsonl(FIXTURES / f"{name}.jsonl")


@pytest.fixture(scope="module")
def tok(micro_store):
    t = load_tokenizer(next((micro_store / "world").glob("*/tokenizer")))
    t.chat_template = R1_LIKE
    return t


# ----------------------------------------------------------------------------------------------- loaders

def test_math_loaders_read_problem_and_answer():
    aime = load_problems(bench("aime24"))
    assert [(p["id"], p["answer"]) for p in aime] == [("60", "1"), ("61", "16")]
    assert aime[0]["question"] == raw("aime24")[0]["problem"]
    math500 = load_problems(bench("math500"))
    assert [p["answer"] for p in math500] == ["\\frac{7}{8}", "4", "15"]
    assert math500[0]["id"] == "test/prealgebra/9001.json"
    assert len(load_problems(bench("math500", limit=2))) == 2


def test_gpqa_gold_letter_points_at_the_correct_answer_after_shuffling():
    problems = load_problems(bench("gpqa_diamond"))
    assert problems == load_problems(bench("gpqa_diamond"))  # same prompts on every call
    for p, row in zip(problems, raw("gpqa_diamond")):
        assert p["id"] == row["Record ID"]
        lines = dict(line.split(") ", 1) for line in p["question"].splitlines() if line.startswith("("))
        assert lines[f"({p['answer']}"] == row["Correct Answer"].strip()
        assert sorted(lines.values()) == sorted(row[c].strip() for c in
                                                ("Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2",
                                                 "Incorrect Answer 3"))
        assert p["question"].startswith(row["Question"])


def test_livecodebench_decodes_compressed_private_tests_and_flags_call_based_problems():
    rows = {r["question_id"]: r for r in raw("livecodebench")}
    assert not rows["abc900_a"]["private_test_cases"].startswith("[")  # the fixture really is compressed
    problems = {p["id"]: p for p in load_problems(bench("livecodebench"))}
    assert problems["abc900_a"]["tests"] == [
        {"input": i, "output": o, "testtype": "stdin"}
        for i, o in [("1 2\n", "3\n"), ("10 20\n", "30\n"), ("0 0\n", "0\n"), ("100 99\n", "199\n")]]
    assert len(problems["1900A"]["tests"]) == 3  # public + plain-JSON private
    assert "unsupported" not in problems["abc900_a"] and "unsupported" not in problems["1900A"]
    assert "functional" in problems["9901"]["unsupported"]
    assert problems["abc900_a"]["difficulty"] == "easy"


def test_private_tests_refuse_pickles_that_import_anything():
    evil = base64.b64encode(zlib.compress(pickle.dumps(os.getcwd))).decode()
    with pytest.raises(pickle.UnpicklingError):
        decode_private_tests(evil)


def test_medical_loaders_read_medreason_format():
    for name, golds, letters in [("medqa", ["B", "C"], "ABCD"), ("medbullets_op4", ["B", "D"], "ABCD"),
                                 ("medbullets_op5", ["B", "E"], "ABCDE")]:
        problems = load_problems(bench(name))
        assert [p["answer"] for p in problems] == golds
        assert {p["options"] for p in problems} == {letters}
        row = raw(name)[1]
        assert f"\n{golds[1]}. {row['answer']}" in problems[1]["question"]


# ----------------------------------------------------------------------------------------------- prompts

def test_chat_prompt_has_one_bos_and_ends_with_think(tok):
    text, ids = build_prompt(tok, "math", "What is 1+1?")
    assert ids.count(tok.bos_token_id) == 1 and ids[0] == tok.bos_token_id
    assert text.endswith("<|Assistant|>" + THINK) and tok.decode(ids).endswith(THINK)
    assert "Return your final response within \\boxed{}. What is 1+1?" in text
    # a template that already opens the thought (newer R1 templates) gets no second <think>
    tok2 = load_tokenizer(tok.name_or_path)
    tok2.chat_template = R1_LIKE.replace("<|Assistant|>", "<|Assistant|><think>\n")
    text2, ids2 = build_prompt(tok2, "medical_mc", "Q?\nA. x\nB. y")
    assert text2.count("<think>") == 1 and text2.endswith(THINK) and ids2.count(tok.bos_token_id) == 1


@pytest.mark.parametrize("bos", ["declared", "none"])
def test_smollm2_prompt_has_no_system_turn(smollm2_tokenizer, bos):
    tok = smollm2_tokenizer
    if bos == "none":  # as Qwen2.5's tokenizer: the same ChatML turns and default system turn, no BOS declared
        tok = copy.deepcopy(tok)
        tok.bos_token = None
    text, ids = build_prompt(tok, "medical_mc", "Q?\nA. x\nB. y")
    assert text == ("<|im_start|>user\n" + user_text("medical_mc", "Q?\nA. x\nB. y") +
                    "<|im_end|>\n<|im_start|>assistant\n" + THINK)
    assert "system" not in text and ids == tok(text, add_special_tokens=False).input_ids


def test_prompt_template_gets_one_bos_and_no_instruction(tok):
    text, ids = build_prompt(tok, "math", "What is 1+1?", "Question : {question}, Answer :")
    assert text == "Question : What is 1+1?, Answer :"
    assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1
    assert tok.decode(ids[1:], clean_up_tokenization_spaces=False) == text


# ------------------------------------------------------------------------------------ scripted backend

class ScriptedBackend:
    """``HFBackend.sample``'s signature; answers each prompt with the next canned response of the first script
    key its text contains, tokenized by the real tokenizer and ended with EOS."""

    def __init__(self, tokenizer, script: dict[str, list[str]]):
        self.tok, self.script, self.seen = tokenizer, script, []
        self.next = dict.fromkeys(script, 0)

    def sample(self, prompts, *, temperature, top_p, max_new_tokens, seed, batch_size):
        out = []
        for ids in prompts:
            text = self.tok.decode(ids)
            self.seen.append((ids, text))
            key = next(k for k in self.script if k in text)
            response = self.script[key][self.next[key] % len(self.script[key])]
            self.next[key] += 1
            ids = self.tok(response, add_special_tokens=False).input_ids + [self.tok.eos_token_id]
            out.append(ids[:max_new_tokens])
        return out


AIME_SCRIPT = {
    "7^{2024}": ["Okay, 7^4 = 2401. Wait, so the cycle has length 4.\n</think>\n\nThe remainder is $\\boxed{1}$.",
                 "Hmm. Wait, wait. Wait, let me recompute.\n</think>\n\n$\\boxed{1}$",
                 "</think>\n\n$\\boxed{49}$",
                 "I am not sure."],
    "positive divisors": ["</think>\n\n$\\boxed{16}$"] + ["</think>\n\n$\\boxed{12}$"] * 3,
}


def test_evaluate_generative_end_to_end_with_a_scripted_backend(tok, tmp_path):
    gpqa = {p["id"]: p["answer"] for p in load_problems(bench("gpqa_diamond"))}
    wrong = "A" if gpqa["recFixture0003"] != "A" else "B"
    script = {
        **AIME_SCRIPT,
        "Compute $\\frac{3}{4}": ["</think>\n\n$\\boxed{\\dfrac{7}{8}}$"],
        "Solve for $x$": ["</think>\n\n$x = \\boxed{5}$"],
        "sqrt{49}": ["</think>\n\n$\\boxed{15}$"],
        "compressed isothermally": [f"</think>\n\n\\boxed{{{gpqa['recFixture0001']}}}"],
        "trigonal planar": [f"</think>\n\nThe answer is ({gpqa['recFixture0002']})"],
        "heterozygotes": [f"</think>\n\n\\boxed{{{wrong}}}"],
        "Print A+B.": ["</think>\n\n```python\na, b = map(int, input().split())\nprint(a + b)\n```"],
        "largest of them": ["</think>\n\n```python\nwhile True:\n    pass\n```"],
        "bleeding gums": ["Scurvy.\n</think>\n\nThe answer is B."],
        "crushing chest pain": ["Inferior MI. Wait, that is the RCA.\n</think>\n\nThe answer is A."],
        "barking cough": ["</think>\n\nThe answer is B."],
        "lithium": ["</think>\n\nThe answer is D."],
        "marathon runner": ["</think>\n\nThe answer is C."],
        "double-bubble": ["</think>\n\nThe answer is E."],
    }
    backend = ScriptedBackend(tok, script)
    benchmarks = [bench("aime24", n_samples=4), bench("math500"), bench("gpqa_diamond"),
                  bench("livecodebench", max_new_tokens=4096), bench("medqa", max_new_tokens=2048),
                  bench("medbullets_op4"), bench("medbullets_op5")]
    metrics = evaluate_generative(None, tok, benchmarks, tmp_path, backend=backend, batch_size=3,
                                  code_timeout_s=1.0)

    acc = {k.split("/")[1]: v for k, v in metrics.items() if k.endswith("/acc")}
    assert acc == {"aime24": 3 / 8, "math500": 2 / 3, "gpqa_diamond": 2 / 3, "livecodebench": 1 / 2,
                   "medqa": 1 / 2, "medbullets_op4": 1.0, "medbullets_op5": 1 / 2}
    assert set(metrics) == {f"{'down' if KIND_OF[b.name] == 'medical_mc' else 'pre'}/{b.name}/{m}"
                            for b in benchmarks for m in ("acc", "wait_per_response", "length_tokens")} | \
        {"pre/livecodebench/n_unsupported"}
    assert metrics["pre/livecodebench/n_unsupported"] == 1
    aime_responses = [r for k in AIME_SCRIPT for r in AIME_SCRIPT[k]]
    assert metrics["pre/aime24/wait_per_response"] == 3 / 8  # "wait" in lower case is not a self-correction
    assert metrics["down/medqa/wait_per_response"] == 1 / 2
    assert metrics["pre/aime24/length_tokens"] == pytest.approx(
        sum(len(tok(r, add_special_tokens=False).input_ids) for r in aime_responses) / 8)

    aime = read_jsonl(tmp_path / "records" / "aime24.jsonl")
    assert len(aime) == 8 and [(r["id"], r["sample"]) for r in aime] == [(i, s) for i in ("60", "61")
                                                                        for s in range(4)]
    assert [r["correct"] for r in aime] == [True, True, False, False, True, False, False, False]
    assert [r["extracted"] for r in aime[:4]] == ["1", "1", "49", None]
    assert aime[0]["response"] == AIME_SCRIPT["7^{2024}"][0]
    assert aime[0]["prompt"].endswith(THINK) and "7^{2024}" in aime[0]["prompt"]
    assert all(not r["truncated"] for r in aime)

    lcb = {r["id"]: r for r in read_jsonl(tmp_path / "records" / "livecodebench.jsonl")}
    assert lcb["abc900_a"]["correct"] and lcb["abc900_a"]["status"] == "passed"
    assert lcb["abc900_a"]["passed"] == lcb["abc900_a"]["total"] == 4
    assert not lcb["1900A"]["correct"] and lcb["1900A"]["status"] == "timeout"
    assert lcb["9901"]["status"] == "unsupported" and lcb["9901"]["correct"] is None
    assert not any("integer array nums" in text for _, text in backend.seen)  # never generated for

    for ids, text in backend.seen:
        assert ids.count(tok.bos_token_id) == 1 and text.endswith(THINK)
    assert len(backend.seen) == 8 + 3 + 3 + 2 + 2 + 2 + 2

    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["metrics"] == metrics
    assert summary["benchmarks"]["livecodebench"]["unsupported_ids"] == ["9901"]
    assert summary["benchmarks"]["livecodebench"]["acc_by_difficulty"] == {"easy": 1.0, "medium": 0.0}
    assert all(len(read_jsonl(tmp_path / "records" / f"{b.name}.jsonl")) ==
               len(raw(b.name)) * b.n_samples for b in benchmarks)


def test_bad_benchmark_configs_fail_before_generating(tok, tmp_path):
    backend = ScriptedBackend(tok, {"": ["x"]})
    no_tokens = bench("math500")
    no_tokens.max_new_tokens = 0
    for bad in ([bench("aime24"), bench("math500"), bench("math500")], [bench("aime24"), no_tokens]):
        with pytest.raises(ValueError, match="math500"):
            evaluate_generative(None, tok, bad, tmp_path, backend=backend)
    assert backend.seen == [] and not (tmp_path / "records" / "aime24.jsonl").exists()


def test_responses_cut_by_the_token_limit_are_marked_truncated(tok, tmp_path):
    backend = ScriptedBackend(tok, {"": ["Let me think about this for a long while before answering. \\boxed{4}"]})
    evaluate_generative(None, tok, [bench("math500", max_new_tokens=6)], tmp_path, backend=backend)
    records = read_jsonl(tmp_path / "records" / "math500.jsonl")
    assert [(r["n_tokens"], r["truncated"], r["correct"]) for r in records] == [(6, True, False)] * 3


# --------------------------------------------------------------------------------------- real toy model

def test_toy_model_end_to_end_through_hf_backend(micro_store, tmp_path):
    from forgetting.pipeline import base_stage, world_stage
    from forgetting.runtime import load
    from forgetting.store import Store

    c = compose("debug=micro", f"store_dir={micro_store}")
    store = Store(micro_store)
    model, tokenizer = load(c, base_stage(c, store, world_stage(c, store)))
    b = bench("math500", prompt_template="Question : {question}, Answer :", max_new_tokens=16, n_samples=2)
    metrics = evaluate_generative(model, tokenizer, [b], tmp_path / "a", seed=3, batch_size=4)

    records = read_jsonl(tmp_path / "a" / "records" / "math500.jsonl")
    questions = [r["problem"] for r in raw("math500")]
    assert [(r["prompt"], r["sample"]) for r in records] == [
        (f"Question : {q}, Answer :", s) for q in questions for s in range(2)]
    for r in records:
        assert isinstance(r["response"], str) and isinstance(r["correct"], bool)
        assert "extracted" in r and 1 <= r["n_tokens"] <= 16
        assert not (r["truncated"] and r["n_tokens"] < 16)
    assert set(metrics) == {"pre/math500/acc", "pre/math500/wait_per_response", "pre/math500/length_tokens"}
    assert all(math.isfinite(v) for v in metrics.values())
    assert json.loads((tmp_path / "a" / "summary.json").read_text())["metrics"] == metrics
    assert metrics["pre/math500/acc"] == sum(r["correct"] for r in records) / 6

    # the same seed samples the same answers
    evaluate_generative(model, tokenizer, [b], tmp_path / "b", seed=3, batch_size=4)
    assert read_jsonl(tmp_path / "b" / "records" / "math500.jsonl") == records
