"""The OLMo paper presets end to end, every row, as a user runs them: ``launch.py +experiment=olmo_table2`` and
``olmo_table3`` with ``debug=dry`` on a tiny OLMo checkpoint (no BOS, like OLMo-1B-hf), MetaMathQA- and
Dolma-schema files, and the OLMo lm-eval suite on local tasks (tests/fixtures/lm_eval_tasks/).

    python launch.py +experiment=olmo_table2 debug=dry model.path=DIR dataset.source=jsonl \\
      dataset.path=tests/fixtures/metamathqa.jsonl replay.path=tests/fixtures/dolma.jsonl \\
      'eval.include_path=[tests/fixtures/lm_eval_tasks]'
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import ROOT
from safetensors.torch import load_file

from forgetting.store import Store

COMMONSENSE = ["arc_challenge", "arc_easy", "boolq", "hellaswag", "openbookqa", "piqa", "social_iqa", "winogrande"]
PRE = [f"pre/{t}/acc" for t in COMMONSENSE] + [
    "pre/commonsense/acc", "pre/mmlu/acc", "pre/bbh/exact_match", "pre/agieval_en/acc", "pre/avg"]
ROWS = {"olmo_table2": ["base", "ft", "cs", "replay", "cfs"],
        "olmo_table3": ["base", "ft", "lora", "l2", "wise_ft", "cfs_half"]}
N_DOWN = 3  # tests/fixtures/metamathqa.jsonl
# training rows: the downstream rows plus the mix (ratio 1, or 0.5 for CFS (50%))
TRAIN_ROWS = {"ft": N_DOWN, "cs": 2 * N_DOWN, "replay": 2 * N_DOWN, "cfs": 2 * N_DOWN, "lora": N_DOWN,
              "l2": N_DOWN, "cfs_half": N_DOWN + 2}


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory):
    """One store for both presets, as a user's: Table 3 reuses Table 2's Base and FT."""
    return tmp_path_factory.mktemp("olmo-store")


def _launch(preset: str, model: str, store_dir, sweep_dir) -> list[dict]:
    args = [sys.executable, str(ROOT / "launch.py"), f"+experiment={preset}", "debug=dry", f"model.path={model}",
            "dataset.source=jsonl", "dataset.path=tests/fixtures/metamathqa.jsonl",
            "replay.path=tests/fixtures/dolma.jsonl", "eval.include_path=[tests/fixtures/lm_eval_tasks]",
            f"store_dir={store_dir}", f"hydra.sweep.dir={sweep_dir}"]
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600, env=os.environ.copy())
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads((sweep_dir / str(i) / "results.json").read_text()) for i in range(len(ROWS[preset]))]


def _weights(path) -> dict[str, torch.Tensor]:
    return {k: v for f in sorted(path.glob("*.safetensors")) for k, v in load_file(str(f)).items()}


@pytest.mark.slow
@pytest.mark.parametrize("preset", list(ROWS))
def test_every_row_of_the_olmo_preset_runs_end_to_end(preset, tiny_olmo, store_dir, tmp_path):
    results = _launch(preset, str(tiny_olmo), store_dir, tmp_path / "sweep")
    assert [r["method"] for r in results] == ROWS[preset]
    base = _weights(tiny_olmo)
    store = Store(store_dir)
    for r in results:
        m = r["metrics"]
        assert set(PRE) | {"down/gsm8k/exact_match"} <= set(m), (r["method"], sorted(m))
        assert all(0.0 <= m[k] <= 1.0 for k in PRE)
        assert m["pre/commonsense/acc"] == pytest.approx(sum(m[f"pre/{t}/acc"] for t in COMMONSENSE) / 8)
        if r["method"] == "base":
            assert r["artifacts"]["model"] == r["artifacts"]["base"]  # the hub-style model itself
            continue
        stage = "merge" if r["method"] == "wise_ft" else "train"
        tuned_dir = store.path(stage, r["artifacts"]["model"])
        if stage == "train":
            summary = json.loads((tuned_dir / "train_summary.json").read_text())
            assert (summary["rows"], summary["steps"]) == (TRAIN_ROWS[r["method"]], 2), r["method"]  # debug=dry
        tuned = _weights(tuned_dir)
        assert set(tuned) == set(base)
        moved = [k for k in base if not torch.equal(tuned[k], base[k].to(tuned[k].dtype))]
        assert len(moved) > len(base) // 2, (r["method"], len(moved), len(base))
    assert (tmp_path / "sweep" / "report.md").exists()


OLMO2_SUITE = {"mmlu": "acc", "arc_challenge": "acc_norm", "hellaswag": "acc_norm", "winogrande": "acc",
               "nq_open": "exact_match", "drop": "f1", "agieval_en": "acc", "gsm8k_cot": "exact_match",
               "leaderboard_mmlu_pro": "acc", "triviaqa": "exact_match"}  # paper 003 App. B.1.2, Table 2's columns


@pytest.fixture(scope="module")
def olmo2_sam(tiny_olmo2, tmp_path_factory):
    """paper 003's 1B setting, dry, on a tiny OLMo-2: the checkpoint mid-trained (SAM) on a local Dolmino-style jsonl,
    fine-tuned at two lrs on MetaMathQA-schema rows but one held out, scored on the OLMo 2 suite's local tasks, on a
    held-out DCLM-style sample and offline prose, and under NF4."""
    tmp_path = tmp_path_factory.mktemp("olmo2_sam")
    store_dir = tmp_path / "store"
    args = [sys.executable, str(ROOT / "launch.py"), "+experiment=olmo2_sam", "debug=dry", f"model.path={tiny_olmo2}",
            "model.midtrain.corpus=tests/fixtures/dolma.jsonl", "model.midtrain.rho=0.05", "trainer.lr=1e-5,2e-4",
            "dataset.source=jsonl", "dataset.path=tests/fixtures/metamathqa.jsonl", "dataset.validation_rows=1",
            "trainer.max_seq_len=128",  # the held-out row is the fixture's longest: 64 tokens leave it no answer
            "eval.include_path=[tests/fixtures/lm_eval_tasks]", "eval.corpus_docs=4",
            "eval.corpora=[stdlib_prose,tests/fixtures/dclm_heldout.jsonl]", f"store_dir={store_dir}",
            f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=900, env=os.environ.copy())
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = [json.loads((tmp_path / "sweep" / str(i) / "results.json").read_text()) for i in range(2)]
    return runs, Store(store_dir), tmp_path / "sweep"


@pytest.mark.slow
def test_the_olmo2_sam_preset_mid_trains_with_sam_then_fine_tunes(olmo2_sam, tiny_olmo2):
    runs, store, _ = olmo2_sam
    assert runs[0]["artifacts"]["base"] == runs[1]["artifacts"]["base"]  # one mid-trained base for the lr sweep
    mid = store.path("continue", runs[0]["artifacts"]["base"])
    assert json.loads((mid / "train_summary.json").read_text())["steps"] == 2
    parent, midtrained = _weights(tiny_olmo2), _weights(mid)
    assert any(not torch.equal(midtrained[k], parent[k].to(midtrained[k].dtype)) for k in parent)
    for r in runs:
        assert "robust/nf4/increase" in r["metrics"] and "pre/avg" in r["metrics"]


def test_olmo2_sam_mid_trains_the_4t_token_stage1_checkpoint_not_the_release():
    """Paper 003 App. B.1 mid-trains "an OLMo-2-1B checkpoint which was pretrained on 4T tokens": the last stage-1
    revision, pinned; the release (main) has had stage 2 already. The revision keys the mid-trained base."""
    from conftest import compose

    from forgetting.pipeline import base_chain, plan

    corpus = f"model.midtrain.corpus={ROOT / 'tests/fixtures/dolma.jsonl'}"
    c = compose("+experiment=olmo2_sam", corpus)
    assert c.model.path == "allenai/OLMo-2-0425-1B"
    assert c.model.revision == "stage1-step1907359-tokens4001B"
    (stage, spec), = base_chain(c, None)
    assert stage == "continue" and spec["parent"] == {"hub": c.model.path, "revision": c.model.revision}
    other = compose("+experiment=olmo2_sam", corpus, "model.revision=main")
    assert plan(other)["base"] != plan(c)["base"]


@pytest.mark.slow
def test_the_olmo2_sam_preset_scores_the_ten_task_average_the_learning_and_a_held_out_loss(olmo2_sam):
    """Paper 003 App. B.1.2 / B.3 at 1B: pre/avg is the mean of the OLMo 2 suite's ten columns, GSM8K among them;
    learning is the loss on MetaMathQA rows held out of training; forgetting can also be read on held-out text."""
    runs, store, sweep = olmo2_sam
    columns = [f"pre/{t}/{m}" for t, m in OLMO2_SUITE.items()]
    for r in runs:
        m = r["metrics"]
        assert all(0.0 <= m[k] <= 1.0 for k in columns), sorted(m)
        assert m["pre/avg"] == pytest.approx(sum(m[k] for k in columns) / 10)  # GSM8K inside the average
        assert m["down/metamathqa/val_loss"] > 0 and not any(k.startswith("down/gsm8k") for k in m)
        assert m["pre/dclm_heldout/loss"] > 0 and m["pre/stdlib_prose/loss"] > 0
        trained = store.path("train", r["artifacts"]["model"])
        assert json.loads((trained / "train_summary.json").read_text())["rows"] == N_DOWN - 1  # one row held out
    report = (sweep / "report.md").read_text()
    assert "### Forgetting as `pre/dclm_heldout/loss`" in report and "### Forgetting as `pre/avg`" in report
