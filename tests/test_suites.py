"""The papers' evaluation suites as the GPU presets compose them: paper 003's OLMo 2 suite for +experiment=olmo2_sam
(App. B.1.2), paper 004's GSM8K protocol for +experiment=olmo2_recycle and llama3_recycle (App. B: 8-shot CoT,
greedy, the final number, ≤ 1024 new tokens, the chat template for instruction-tuned models; §3.2: 2,048 tokens); and
the protocol through lm-eval on a tiny OLMo-2 checkpoint with a Tülu chat template.

    pytest tests/test_suites.py
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import ROOT, compose

from forgetting.evaluate.evaluators import Evaluation, LmEval

TASKS_DIR = ROOT / "tests" / "fixtures" / "lm_eval_tasks"
OLMO2_SUITE = ["mmlu", "arc_challenge", "hellaswag", "winogrande", "nq_open", "drop", "agieval_en", "gsm8k_cot",
               "leaderboard_mmlu_pro", "triviaqa"]  # paper 003 App. B.1.2, Table 2's columns


def _builtin(task_yaml: str) -> dict:
    import lm_eval.tasks
    from lm_eval.tasks._yaml_loader import load_yaml

    return load_yaml(Path(lm_eval.tasks.__file__).parent / task_yaml, resolve_func=False)


def test_olmo2_sam_scores_paper_003s_ten_tasks_and_holds_out_metamathqa_rows():
    c = compose("+experiment=olmo2_sam", "hydra.mode=RUN")
    e = c.eval
    assert e.tasks == OLMO2_SUITE and e.downstream == [] and e.groups == {}  # ten columns, GSM8K among them
    assert e.fewshot == {"mmlu": 5, "arc_challenge": 5, "hellaswag": 5, "winogrande": 5, "nq_open": 5, "drop": 5,
                         "gsm8k_cot": 8, "leaderboard_mmlu_pro": 5, "triviaqa": 5}  # agieval_en: no few-shot split
    assert e.metrics["gsm8k_cot"] == "exact_match,flexible-extract" and e.metrics["drop"] == "f1,none"
    assert e.downstream_loss and c.dataset.validation_rows == 1000 and e.corpora == ["stdlib_prose"]
    assert not LmEval.chat_template(c)  # a base model fine-tuned on plain-format MetaMathQA rows


def _recycle(preset: str, *overrides: str):
    return compose(f"+experiment={preset}", "hydra.mode=RUN", *overrides)


@pytest.mark.parametrize("preset", ["olmo2_recycle", "llama3_recycle"])
def test_the_paper_004_presets_carry_its_gsm8k_protocol(preset):
    c = _recycle(preset)
    e = c.eval
    assert e.downstream == ["gsm8k_cot"] and e.fewshot == {"gsm8k_cot": 8}
    assert e.metrics["gsm8k_cot"] == "exact_match,flexible-extract" and e.gen_kwargs == {"max_gen_toks": 1024}
    assert e.apply_chat_template is None and e.fewshot_as_multiturn  # null: decided per row, below
    cot = _builtin("gsm8k/gsm8k-cot.yaml")  # what lm-eval runs under that name
    assert cot["num_fewshot"] == 8 and len(cot["fewshot_config"]["samples"]) == 8
    assert cot["generation_kwargs"]["do_sample"] is False  # greedy
    flexible = next(f for f in cot["filter_list"] if f["name"] == "flexible-extract")["filter"]
    assert flexible[0] == {"function": "regex", "group_select": -1, "regex_pattern": "(-?[$0-9.,]{2,})|(-?[0-9]+)"}
    # the chat template for the rows the run instruction-tunes, none for the base model itself
    assert LmEval.chat_template(c)
    assert not LmEval.chat_template(_recycle(preset, "method=base"))
    if preset == "olmo2_recycle":
        assert c.trainer.max_seq_len == 2048  # paper 004 §3.2
        assert LmEval.chat_template(_recycle(preset, "method=recycle", "method.recycle_train=false",
                                             "method.recycle_from=[olmo2_m4]"))  # a diff of a chat-format FT
    else:
        assert c.method.recycle_tuned == "meta-llama/Meta-Llama-3-8B-Instruct" and not c.method.recycle_train
    assert not LmEval.chat_template(compose("dataset=tulu3_math", "eval.apply_chat_template=false"))  # as stated


def test_paper_000s_suite_keeps_its_own_gsm8k():
    e = compose("eval=olmo_suite").eval
    assert e.downstream == ["gsm8k"] and e.fewshot == {"gsm8k": 5} and e.apply_chat_template is False


GSM8K_TEST = [json.loads(line) for line in (TASKS_DIR / "data" / "gsm8k_test.jsonl").read_text().splitlines()]


def _answers() -> dict[str, str]:
    """A chain of thought per fixture question with no "The answer is N." line: the first ends on the right number,
    the second states the right number first and ends on another."""
    out = {}
    for i, row in enumerate(GSM8K_TEST):
        gold = int(row["answer"].split("####")[-1].strip())
        out[row["question"]] = (f"Working it out step by step, 2 + 3 = 5 and the total is {gold}" if i % 2 == 0 else
                                f"It looks like {gold} at first, but adding 1 more gives {gold + 1}")
    return out


@pytest.fixture
def generations(monkeypatch):
    """HFLM's generation call answers with :func:`_answers` (a random tiny model answers nothing), and records what
    reached the model: each prompt decoded from its token ids, the room for new tokens and the stop sequences."""
    from lm_eval.models.huggingface import HFLM

    answers, seen = _answers(), []

    def generate(self, context, max_length, stop, **kwargs):
        rows = []
        for ids in context.tolist():
            prompt = self.tokenizer.decode([t for t in ids if t != self.tokenizer.pad_token_id])
            question = next(q for q in answers if q in prompt.rsplit("Q: ", 1)[-1])
            seen.append({"prompt": prompt, "max_new": max_length - context.shape[1], "stop": stop, **kwargs})
            rows.append(ids + self.tokenizer.encode(answers[question], add_special_tokens=False))
        width = max(map(len, rows))
        return torch.tensor([r + [self.tokenizer.pad_token_id] * (width - len(r)) for r in rows])

    monkeypatch.setattr(HFLM, "_model_generate", generate)
    return seen


def _score(c, tiny, tmp_path):
    from forgetting.models import load_model, load_tokenizer

    ev = Evaluation(c, None, None, None, None, out=tmp_path, model=load_model(tiny, "float32", False, None),
                    tokenizer=load_tokenizer(tiny))
    metrics = LmEval().run(ev)
    return metrics, json.loads((tmp_path / "lm_eval.json").read_text())["gsm8k_cot"], ev.examples


@pytest.mark.parametrize("method", [(), ("method=base",)], ids=["fine-tuned", "base"])
def test_gsm8k_through_lm_eval_in_the_chat_template_takes_the_final_number(tiny_olmo2, generations, tmp_path,
                                                                           method):
    """olmo2_recycle's evaluation on a tiny OLMo-2 whose tokenizer ships a Tülu chat template: the fine-tuned row's
    prompts reach the model as 8 user/assistant exemplar turns and a final user turn; the base row's as plain text;
    the score is the final number of each answer, which the strict "The answer is N." filter misses."""
    c = _recycle("olmo2_recycle", f"model.path={tiny_olmo2}", f"eval.include_path=[{TASKS_DIR}]", "eval.limit=2",
                 "eval.tasks=[]", *method)
    metrics, result, examples = _score(c, tiny_olmo2, tmp_path)
    assert len(generations) == 2
    for g in generations:
        assert g["max_new"] == 1024 and "Q:" in g["stop"] and "<|endoftext|>" in g["stop"]
        assert g["do_sample"] is False  # greedy
        if method:
            assert "<|user|>" not in g["prompt"] and g["prompt"].startswith("Q: There are 15 trees")
            assert g["prompt"].count("Q: ") == 9 and g["prompt"].endswith("\nA:")
        else:
            assert g["prompt"].startswith("<|endoftext|><|user|>\nQ: There are 15 trees")
            assert g["prompt"].count("<|user|>\n") == 9 and g["prompt"].count("<|assistant|>\n") == 9
            assert g["prompt"].count("The answer is 6.<|endoftext|>") == 1  # an exemplar's own assistant turn
            assert g["prompt"].endswith("A:\n<|assistant|>\n")
    assert metrics == {"down/gsm8k_cot/exact_match": 0.5}  # the first answer's final number is right, the second's not
    assert result["exact_match,flexible-extract"] == 0.5 and result["exact_match,strict-match"] == 0.0
    assert examples["down/gsm8k_cot/exact_match"]["v"] == [1.0, 0.0]


def test_the_chat_template_is_part_of_the_evaluation_key_only_when_on(tmp_path):
    from forgetting.pipeline import evaluate_spec
    from forgetting.store import Artifact, key_of

    def key(*overrides):
        c = compose("eval=recycle_suite", f"eval.include_path=[{TASKS_DIR}]", *overrides)
        return key_of("evaluate", evaluate_spec(c, Artifact("hub", "m", tmp_path), None))

    base = key("method=base")
    assert key("method=base", "eval.apply_chat_template=false") == base  # off, whichever way it is said
    assert key("method=base", "eval.fewshot_as_multiturn=false") == base  # read only with the template on
    on = key("method=base", "eval.apply_chat_template=true")
    assert on != base and key("method=base", "eval.apply_chat_template=true", "eval.fewshot_as_multiturn=false") != on
