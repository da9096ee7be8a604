"""Your own task's test split, scored: greedy generation + exact match of the extracted answer, and answer-token loss.

    python launch.py -m method=base,ft,cfs dataset=jsonl dataset.name=colours dataset.path=train.jsonl \
        dataset.test_path=test.jsonl 'eval.downstream=[]'
    pytest tests/evaluate/test_downstream.py tests/test_byo.py

Each test row is prompted exactly as training prompts it (``dataset.format``: ``dataset.prompt_template`` or the
chat template; ``forgetting.pipeline.prompt_ids``), answered greedily for at most ``eval.max_gen_toks`` tokens, and
graded by :class:`forgetting.evaluate.graders.AnswerPatternGrader` (``dataset.answer_pattern``, applied to the
generation and to the reference response) → ``down/<dataset.name>/exact_match``. The loss is the mean cross-entropy
over the response tokens and EOS of the encoded test rows, the tokens training takes its loss on
(``forgetting.pipeline.encode_example``) → ``down/<dataset.name>/loss``. One record per row goes to the evaluation
artifact's ``records/<dataset.name>.jsonl``.
"""
from __future__ import annotations

from pathlib import Path

from tqdm.auto import tqdm

from forgetting.data.jsonl import write_jsonl
from forgetting.evaluate.examples import from_pairs, record
from forgetting.evaluate.graders import AnswerPatternGrader
from forgetting.evaluate.heldout import ratio, row_losses
from forgetting.generate.hf import HFBackend


def score_test_split(model, tokenizer, rows: list[dict], prompts: list[list[int]], examples: list[dict], *,
                     name: str, answer_pattern: str, max_new_tokens: int, batch_size: int,
                     out_dir: Path, per_example: dict | None = None) -> dict[str, float]:
    """``down/<name>/exact_match`` and ``down/<name>/loss`` of ``rows`` (``{"query", "response"}``), given their
    prompt ids and their encoded training examples; each metric's per-row values go into ``per_example``
    (``forgetting.evaluate.examples``)."""
    backend, completions = HFBackend(model, tokenizer), []
    with tqdm(total=len(prompts), desc=f"{name}: generate", unit="row") as bar:
        for start in range(0, len(prompts), batch_size):
            completions += backend.sample(prompts[start:start + batch_size], temperature=0.0, top_p=1.0,
                                          max_new_tokens=max_new_tokens, seed=0, batch_size=batch_size)
            bar.update(len(prompts[start:start + batch_size]))
    grader = AnswerPatternGrader(answer_pattern)
    records = []
    for row, ids in zip(rows, completions):
        text = tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        records.append({"query": row["query"], "reference": row["response"], "response": text,
                        **grader.score(text, row), "n_tokens": len(ids)})
    (out_dir / "records").mkdir(parents=True, exist_ok=True)
    write_jsonl(out_dir / "records" / f"{name}.jsonl", records)
    pairs = row_losses(model, examples, tokenizer.pad_token_id, batch_size)
    if per_example is not None:
        ids = [r["query"] for r in rows]
        per_example[f"down/{name}/exact_match"] = record([float(r["correct"]) for r in records], ids)
        per_example[f"down/{name}/loss"] = from_pairs(pairs, ids)
    return {f"down/{name}/exact_match": sum(r["correct"] for r in records) / len(records),
            f"down/{name}/loss": ratio(pairs)}
