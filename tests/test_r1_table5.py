"""Paper Table 5 (R1-Distill-Llama-8B on MedReason) end to end on CPU: every row of ``+experiment=r1_table5``
through ``launch.py``, as a user runs it, on a tiny checkpoint shaped like R1-Distill (tests/fixtures/tiny_r1.py),
MedReason and the benchmarks as local files in their hub schemas, and ``debug=dry``.

    pytest tests/test_r1_table5.py
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml
from conftest import CONF, ROOT, compose

from forgetting.data.jsonl import read_jsonl
from forgetting.models import load_tokenizer

FIXTURES = ROOT / "tests" / "fixtures"
BOS, EOS = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"
ROWS = yaml.safe_load((CONF / "experiment" / "r1_table5.yaml").read_text())["hydra"]["sweeper"]["params"]["method"]


def test_tiny_r1_is_shaped_like_r1_distill(tiny_r1):
    from safetensors import safe_open
    from transformers import AutoConfig

    tok = load_tokenizer(tiny_r1)
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == (BOS, EOS, EOS)
    assert tok("Hi").input_ids[0] == tok.bos_token_id  # add_bos_token, as R1-Distill-Llama's tokenizer
    marks = ["<｜User｜>", "<｜Assistant｜>", "<think>", "</think>"]
    ids = [tok.convert_tokens_to_ids(m) for m in marks]
    assert None not in ids and tok.unk_token_id not in ids and len(set(ids)) == 4
    # not special, as in R1-Distill: decoding for the graders keeps them
    assert tok.decode(tok("<think>\nso</think>\n\nB", add_special_tokens=False).input_ids,
                      skip_special_tokens=True) == "<think>\nso</think>\n\nB"
    chat = [{"role": "system", "content": "S."}, {"role": "user", "content": "Q1"},
            {"role": "assistant", "content": "<think>\nr\n</think>\n\nA1"}, {"role": "user", "content": "Q2"}]
    assert tok.apply_chat_template(chat, add_generation_prompt=True, tokenize=False) == \
        f"{BOS}S.<｜User｜>Q1<｜Assistant｜>\n\nA1{EOS}<｜User｜>Q2<｜Assistant｜><think>\n"
    cfg = AutoConfig.from_pretrained(tiny_r1)
    assert cfg.architectures == ["LlamaForCausalLM"] and cfg.num_key_value_heads < cfg.num_attention_heads
    assert cfg.rope_parameters["rope_type"] == "llama3" and not cfg.tie_word_embeddings
    with safe_open(str(tiny_r1 / "model.safetensors"), "pt") as f:
        assert {str(f.get_tensor(k).dtype) for k in f.keys()} == {"torch.bfloat16"}


def test_r1_table5_runs_every_row_end_to_end(tiny_r1, tmp_path):
    assert ROWS == "base,ft,wise_ft,lora,cs,cfs"
    methods = ROWS.split(",")
    store, sweep = tmp_path / "store", tmp_path / "sweep"
    shared = ["+experiment=r1_table5", "debug=dry", f"model.path={tiny_r1}", "dataset.source=jsonl",
              f"dataset.path={FIXTURES / 'medreason.jsonl'}", f"eval.benchmark_dir={FIXTURES / 'benchmarks'}"]
    proc = subprocess.run([sys.executable, str(ROOT / "launch.py"), *shared, f"store_dir={store}",
                           f"hydra.sweep.dir={sweep}", f"method={','.join(methods)}"],
                          capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]

    suite = compose(*shared).eval.generative  # what every row evaluated
    assert [b.name for b in suite] == ["aime24", "math500", "livecodebench", "gpqa_diamond", "medqa",
                                       "medbullets_op4", "medbullets_op5"]
    results = {r["method"]: r for r in (json.loads(p.read_text()) for p in sweep.glob("*/results.json"))}
    assert sorted(results) == sorted(methods)
    evaluations = {m["spec"]["model"]["key"]: m["dir"] for m in manifests(store / "evaluate")}
    for method, r in results.items():
        m = r["metrics"]
        for b in suite:
            for metric in ("acc", "wait_per_response", "length_tokens"):
                assert f"{b.group}/{b.name}/{metric}" in m, (method, b.name, metric)
        assert {b.group for b in suite} == {"pre", "down"}
        for group in ("pre", "down"):
            accs = [m[f"{group}/{b.name}/acc"] for b in suite if b.group == group]
            assert m[f"{group}/avg"] == pytest.approx(sum(accs) / len(accs))
        # one record per sample, generated from the chat prompt with <think> opened, capped by debug=dry
        records = evaluations[r["artifacts"]["model"]] / "records"
        for b in suite:
            rows = read_jsonl(records / f"{b.name}.jsonl")
            graded = [x for x in rows if x["correct"] is not None]
            assert len(rows) == 2 * b.n_samples and graded, (method, b.name)
            for x in graded:
                assert x["prompt"].startswith(BOS + "<｜User｜>") and x["prompt"].count(BOS) == 1
                assert x["prompt"].endswith("<｜Assistant｜><think>\n") and x["prompt"].count("<think>") == 1
                assert 0 < x["n_tokens"] <= 16 and {"response", "extracted", "correct"} <= set(x)
        trained = method != "base"
        assert (r["artifacts"]["model"] != r["artifacts"]["base"]) == trained
        assert (sweep / str(methods.index(method)) / "train_log.jsonl").exists() == trained

    # the preset's knobs reached the rows: LoRA r=256, 8-bit AdamW (paper Table 5, Appendix B)
    trains = {m["key"]: m["spec"] for m in manifests(store / "train")}
    lora = trains[results["lora"]["artifacts"]["model"]]
    assert (lora["adapter"], lora["optimizer"]["name"]) == ({"name": "lora", "lora_rank": 256, "lora_alpha": None},
                                                          "adamw8bit")
    # CS answered MedReason's questions in R1's chat format with <think> opened; CFS sampled from the BOS id alone
    tok = load_tokenizer(tiny_r1)
    questions = [row["question"] for row in read_jsonl(FIXTURES / "medreason.jsonl")]
    sources = set()
    for m in manifests(store / "generate"):
        sources.add(m["spec"]["source"])
        for row in read_jsonl(m["dir"] / "samples.jsonl"):
            assert row["ids"][0] == tok.bos_token_id and (row["n_prompt"] > 0) == (m["spec"]["source"] == "contextual")
            prompt = tok.decode(row["ids"][:row["n_prompt"]])
            assert not row["n_prompt"] or prompt in {f"{BOS}<｜User｜>{q}<｜Assistant｜><think>\n" for q in questions}
    assert sources == {"contextual", "context_free"}
    assert (sweep / "report.md").exists()


def manifests(stage_dir) -> list[dict]:
    return [{**json.loads((d / "manifest.json").read_text()), "dir": d} for d in stage_dir.iterdir()]
