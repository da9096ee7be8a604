"""Row builders and chat encoding: MetaMathQA and MedReason rows in their real schemas, one BOS, answer-only loss."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from forgetting.config import DatasetConfig
from forgetting.data.encode import IGNORE, encode_pair
from forgetting.data.formats import chat_prompt_text, encode_chat, load_rows
from forgetting.models import load_tokenizer

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
R1_LIKE = "{{ bos_token }}{% for m in messages %}<|User|>{{ m['content'] }}{% endfor %}" \
          "{% if add_generation_prompt %}<|Assistant|>{% endif %}"


def _tok(micro_store, chat_template=R1_LIKE):
    tok = load_tokenizer(next((micro_store / "world").glob("*/tokenizer")))
    tok.chat_template = chat_template
    return tok


def _cfg(name: str, **kw) -> DatasetConfig:
    return DatasetConfig(name=name, source="jsonl", path=str(FIXTURES / f"{name}.jsonl"), **kw)


def test_metamathqa_rows_encode_with_loss_on_the_response_only(micro_store):
    cfg = _cfg("metamathqa", builder="metamathqa")
    rows = load_rows(cfg)
    raw = [json.loads(line) for line in open(cfg.path)]
    assert rows == [{"query": r["query"], "response": r["response"]} for r in raw]
    tok = _tok(micro_store)
    prompt = cfg.prompt_template.format(query=rows[0]["query"])
    assert prompt.startswith("Question : A baker") and prompt.endswith(", Answer :")
    ex = encode_pair(tok, prompt, rows[0]["response"], max_len=1024)
    n_prompt = 1 + len(tok(prompt, add_special_tokens=False).input_ids)
    assert ex["labels"][:n_prompt] == [IGNORE] * n_prompt
    assert tok.decode(ex["labels"][n_prompt:]) == " " + rows[0]["response"] + tok.eos_token
    assert rows[0]["response"].endswith("The answer is: 18")


def test_field_mapping_without_builder_and_limit():
    rows = load_rows(_cfg("medreason", query_field="question", response_field="answer", limit=2))
    assert len(rows) == 2 and rows[1]["response"] == "TSH receptor-stimulating antibody"


def test_medreason_response_is_think_block_then_answer():
    raw = [json.loads(line) for line in open(FIXTURES / "medreason.jsonl")]
    rows = load_rows(_cfg("medreason", builder="medreason", format="chat"))
    for row, r in zip(rows, raw):
        assert row["query"] == r["question"]  # as MedReason's own SFT script: the question column alone
        assert row["response"] == "<think>\n" + r["reasoning"] + "\n</think>\n\n" + r["answer"]
        assert row["response"].endswith("\n</think>\n\n" + r["answer"])
    with_options = load_rows(_cfg("medreason", builder="medreason_options", format="chat"))
    assert with_options[0]["query"] == raw[0]["question"] + "\n" + raw[0]["options"]
    assert with_options[0]["query"].endswith("C. Vitamin C\nD. Vitamin D")


def test_missing_field_names_it_in_one_line(tmp_path):
    with pytest.raises(ValueError) as e:
        load_rows(_cfg("metamathqa", query_field="question"))
    msg = str(e.value)
    assert "'question'" in msg and "metamathqa.jsonl" in msg and "'original_question'" in msg and "\n" not in msg
    bad = tmp_path / "medreason_no_reasoning.jsonl"
    bad.write_text(json.dumps({"question": "q", "answer": "a", "options": ""}) + "\n")
    with pytest.raises(ValueError, match=r"dataset.path='.*no_reasoning.jsonl' is invalid: .*builder 'medreason'.*"
                                         r"row 1: no field 'reasoning' \(it has 'question', 'answer', 'options'\)"):
        load_rows(DatasetConfig(name="m", source="jsonl", path=str(bad), builder="medreason"))
    with pytest.raises(ValueError, match="dataset.builder='nope'"):
        load_rows(_cfg("metamathqa", builder="nope"))


def test_chat_encoding_has_one_bos_masks_the_prompt_and_labels_response_and_eos(micro_store):
    tok = _tok(micro_store)
    query, response = "Which vitamin prevents scurvy?", "<think>\ncollagen needs it\n</think>\n\nVitamin C"
    ex = encode_chat(tok, query, response, max_len=1024, weight=0.5)
    ids, labels = ex["input_ids"], ex["labels"]
    prompt_text = tok.bos_token + "<|User|>" + query + "<|Assistant|>"
    n_prompt = len(tok(prompt_text, add_special_tokens=False).input_ids)
    assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1
    assert ids[:n_prompt] == tok(prompt_text, add_special_tokens=False).input_ids
    assert labels[:n_prompt] == [IGNORE] * n_prompt
    assert labels[n_prompt:] == ids[n_prompt:] and ids[-1] == tok.eos_token_id
    assert tok.decode(labels[n_prompt:]) == response + tok.eos_token
    assert ex["weight"] == 0.5
    short = encode_chat(tok, query, response, max_len=n_prompt + 3)
    assert short["input_ids"] == ids[: n_prompt + 3] and short["labels"] == labels[: n_prompt + 3]


def test_chat_encoding_drops_a_think_tag_the_template_already_opened(micro_store):
    tok = _tok(micro_store, R1_LIKE.replace("<|Assistant|>", "<|Assistant|><think>\n"))
    ex = encode_chat(tok, "q?", "<think>\nr\n</think>\n\nA", max_len=1024)
    text = tok.decode(ex["input_ids"])
    assert text.count("<think>") == 1 and text.endswith("<|Assistant|><think>\nr\n</think>\n\nA" + tok.eos_token)
    n_resp = sum(label != IGNORE for label in ex["labels"])
    assert tok.decode(ex["input_ids"][-n_resp:]) == "r\n</think>\n\nA" + tok.eos_token


@pytest.mark.parametrize("template", [R1_LIKE.replace("{{ bos_token }}", ""),
                                      "{{ bos_token }}" + R1_LIKE])
def test_chat_template_without_exactly_one_leading_bos_is_refused(micro_store, template):
    tok = _tok(micro_store, template)
    with pytest.raises(ValueError, match=r"chat template of tokenizer .* BOS"):
        encode_chat(tok, "q?", "a", max_len=64)


# ------------------------------------------------------------------------ no system turn (paper Appendix B)

SMOL_DEFAULT = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


def test_smollm2_template_injects_a_system_turn_that_chat_formatting_drops(smollm2_tokenizer):
    tok, query, response = smollm2_tokenizer, "Which vitamin prevents scurvy?", "Vitamin C"
    raw = tok.apply_chat_template([{"role": "user", "content": query}], add_generation_prompt=True, tokenize=False)
    assert SMOL_DEFAULT in raw  # what the template does when given no system message
    prompt = f"<|im_start|>user\n{query}<|im_end|>\n<|im_start|>assistant\n"
    assert raw.endswith(prompt)  # only the system turn goes: the user turn is the template's own
    ex = encode_chat(tok, query, response, max_len=1024)
    ids, labels = ex["input_ids"], ex["labels"]
    n_prompt = len(tok(prompt, add_special_tokens=False).input_ids)
    assert tok.decode(ids) == prompt + response + "<|im_end|>"
    assert ids[0] == tok.bos_token_id == 1  # SmolLM2's BOS is <|im_start|>, which also opens every turn
    assert labels[:n_prompt] == [IGNORE] * n_prompt and tok.decode(labels[n_prompt:]) == response + "<|im_end|>"


def test_templates_that_inject_nothing_render_unchanged(tiny_r1, micro_store):
    r1 = load_tokenizer(tiny_r1)
    query = "Which vitamin prevents scurvy?"
    rendered = r1.apply_chat_template([{"role": "user", "content": query}], add_generation_prompt=True,
                                      tokenize=False)
    assert chat_prompt_text(r1, query) == rendered == "<｜begin▁of▁sentence｜><｜User｜>" + query + \
        "<｜Assistant｜><think>\n"
    # a preamble that is no system turn (a system message does not replace it) stays too
    preamble = "{{ bos_token }}[notes]" + R1_LIKE.replace("{{ bos_token }}", "")
    tok = _tok(micro_store, preamble)
    assert chat_prompt_text(tok, query) == tok.bos_token + "[notes]<|User|>" + query + "<|Assistant|>"


def test_a_default_system_turn_after_the_bos_is_dropped_and_the_bos_kept(micro_store):
    # Llama-3-like: BOS from the variable, then a system turn with a default text unless one is given
    template = ("{{ bos_token }}{% if messages[0]['role'] != 'system' %}[sys]Be terse.[/sys]{% endif %}"
                "{% for m in messages %}{% if m['role'] == 'system' %}[sys]{{ m['content'] }}[/sys]"
                "{% else %}[{{ m['role'] }}]{{ m['content'] }}[/end]{% endif %}{% endfor %}"
                "{% if add_generation_prompt %}[assistant]{% endif %}")
    tok = _tok(micro_store, template)
    assert chat_prompt_text(tok, "q?") == tok.bos_token + "[user]q?[/end][assistant]"
    ids = encode_chat(tok, "q?", "a", max_len=64)["input_ids"]
    assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1 and "Be terse" not in tok.decode(ids)


def test_a_template_whose_turns_cannot_be_told_apart_is_refused(micro_store):
    tok = _tok(micro_store, "{{ bos_token }}<|User|>{{ messages[0]['content'] }}<|Assistant|>")
    with pytest.raises(ValueError, match=r"cannot tell its system turn from its user turn"):
        encode_chat(tok, "q?", "a", max_len=64)
