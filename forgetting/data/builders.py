"""Row builders: a hub dataset's raw row → ``{"query", "response"}`` (``dataset.builder``), pure functions of the
row, registered in ``BUILDERS``. Adding a dataset whose columns need more than ``dataset.query_field`` /
``response_field``: one function here (or in a ``FORGETTING_PLUGINS`` module) under ``@BUILDERS.register()``.
"""
from __future__ import annotations

from typing import Callable

from forgetting.registry import Registry

# dataset.builder=<name> → the function (registration order: the order an unknown name's error lists them)
BUILDERS: Registry[Callable[[dict], dict]] = Registry("dataset.builder")

THINK_OPEN, THINK_CLOSE = "<think>\n", "\n</think>\n\n"


@BUILDERS.register()
def metamathqa(row: dict) -> dict:
    """``meta-math/MetaMathQA`` (columns query, response, type, original_question): used as is; the response
    already ends "The answer is: N", which the GSM8K-style strict-match filter reads."""
    return {"query": row["query"], "response": row["response"]}


@BUILDERS.register()
def medreason(row: dict) -> dict:
    """``UCSC-VLAA/MedReason`` (columns dataset_name, id_in_dataset, question, answer, reasoning, options): the
    question, then the reasoning inside ``<think>…</think>``, then the answer (paper Appendix B). The query is
    the ``question`` column alone, as MedReason's own SFT script builds its prompt (src/model_training/SFT.py:
    ``q = da['question']``); ``medreason_options`` also appends the separate ``options`` text."""
    return {"query": row["question"], "response": THINK_OPEN + row["reasoning"] + THINK_CLOSE + row["answer"]}


@BUILDERS.register()
def medreason_options(row: dict) -> dict:
    """MedReason with its answer choices (``options``: "Answer Choices:\\nA. …\\nB. …", empty for open questions)
    after the question, as the multiple-choice benchmarks (MedQA, MedBullets) present them."""
    out = medreason(row)
    options = (row["options"] or "").strip()
    if options:
        out["query"] = row["question"].rstrip() + "\n" + options
    return out


@BUILDERS.register()
def tulu3_sft(row: dict) -> dict:
    """Tülu 3 SFT sets (``allenai/tulu-3-sft-personas-math`` and its -grade/-algebra siblings: columns id, prompt,
    messages): the first user turn of ``messages`` as the query, the assistant turn after it as the response."""
    messages = row["messages"]
    users = [i for i, m in enumerate(messages) if m["role"] == "user"]
    if not users or users[0] + 1 >= len(messages) or messages[users[0] + 1]["role"] != "assistant":
        raise ValueError("'messages' has no user turn followed by an assistant turn")
    return {"query": messages[users[0]]["content"], "response": messages[users[0] + 1]["content"]}
