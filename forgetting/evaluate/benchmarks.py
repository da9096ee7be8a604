"""Generative benchmarks of the paper's §3.2 as problems, and the prompts a reasoning model is asked.

    pytest tests/evaluate/test_generative.py

One loader per ``BenchmarkConfig.kind`` turns a benchmark's rows, in the hub dataset's own schema, into problems
``{"id", "question", "answer", ...}``: ``question`` is the text shown to the model (options included for
multiple choice), ``answer`` the gold (a math string or an option letter); code problems carry ``tests`` instead,
and a problem the graders cannot grade carries ``unsupported`` (a reason) and is never generated for.
Hub ids and local files (``.jsonl``/``.json``/``.parquet``/``.csv`` in the same schema) go through the same
``datasets.load_dataset`` call, so the fixtures in ``tests/fixtures/benchmarks/`` exercise the real code path.

Prompts (paper Appendix C): the SkyThought instruction of the kind (MedReason's for the medical suite) in the
user turn of the tokenizer's chat template, no system turn (even where the template would inject a default one),
then ``<think>\\n`` appended unless the template already ends with it; or, for a model without a chat template
(the toy model), ``prompt_template``.
"""
from __future__ import annotations

import base64
import io
import json
import pickle
import zlib
from dataclasses import dataclass
from typing import Any, Callable

from forgetting.config import BenchmarkConfig
from forgetting.data.encode import encode_prompt
from forgetting.data.formats import chat_prompt_text, encode_rendered, file_builder
from forgetting.evaluate.graders import GPQA_INSTRUCTION, grade_code, grade_math, grade_multiple_choice, shuffle_options
from forgetting.registry import Registry

__all__ = ["BENCHMARK_KINDS", "Kind", "THINK", "build_prompt", "decode_private_tests", "load_gpqa",
           "load_livecodebench", "load_math", "load_medical_mc", "load_problems", "user_text"]

THINK = "<think>\n"  # paper Appendix C: "we append a <think> token to the query"

# The user turn per kind: SkyThought's task templates (skythought/tools/tasks/{math/math500,aime/aime,
# gpqa_diamond/gpqa_diamond,livecodebench/livecodebench}.yaml) and MedReason's strict multiple-choice prompt
# (inherited from HuatuoGPT-o1's evaluation/eval.py). Plain concatenation, not str.format: the instructions
# contain literal braces ("\boxed{}").
MATH_INSTRUCTION = "Return your final response within \\boxed{}."
LCB_STDIN_INSTRUCTION = (
    "Generate an executable Python function generated from the given prompt. The function should take stdin as "
    "input and print the output. Simply call the function after the definition."
)
# Not in SkyThought's template; CodeGrader (like SkyThought's has_code) only reads fenced blocks, so ask for one.
CODE_FENCE = "Write the complete program, reading from stdin and writing to stdout, in a single ```python code block."
MEDICAL_INSTRUCTION = (
    "Please answer the following multiple-choice questions, ensuring your response concludes with the correct "
    "option in the format: 'The answer is A.'."
)

# SkyThought's AIME24 is AI-MO/aimo-validation-aime (AIME 2022-2024, 90 rows) restricted to rows whose url
# mentions 2024 (skythought/tools/tasks/aime/aime_handler.py); HuggingFaceH4/aime_2024 holds those 30 only.
_YEAR_FILTERS = {"AI-MO/aimo-validation-aime": "2024"}
# LiveCodeBench's hub repo is a loading script, which datasets >= 4 no longer runs; its releases are cumulative
# jsonl files (ALLOWED_FILES in code_generation_lite.py), read here with the json builder.
LCB_REPO = "livecodebench/code_generation_lite"
LCB_RELEASES = {f"release_v{n}": [f"test{'' if i == 1 else i}.jsonl" for i in range(1, n + 1)] for n in range(1, 7)}
LCB_RELEASES.update({f"v{n}": [f"test{'' if n == 1 else n}.jsonl"] for n in range(1, 7)})


# ------------------------------------------------------------------------------------------------ loading

def _rows(cfg: BenchmarkConfig, field: str | None = None, data_files: list[str] | None = None) -> list[dict]:
    """Rows of a hub dataset (``path``, ``subset``, ``split``) or of a data file (its single ``train`` split;
    ``field`` selects one list of a JSON object of lists, and is ignored for a JSON-lines file)."""
    from datasets import load_dataset

    if data_files is not None:
        ds = load_dataset("json", data_files=data_files, split="train")
    elif builder := file_builder(cfg.path):
        # ``field`` picks one list out of a JSON document; a JSON-lines file is rows already (one per benchmark)
        kwargs = {"field": field} if field and builder == "json" and ".jsonl" not in str(cfg.path).lower() else {}
        ds = load_dataset(builder, data_files=str(cfg.path), split="train", **kwargs)
    else:
        ds = load_dataset(str(cfg.path), cfg.subset, split=cfg.split)
    return ds.to_list()


def _require(rows: list[dict], columns: tuple[str, ...], cfg: BenchmarkConfig) -> None:
    if not rows:
        raise ValueError(f"benchmark {cfg.name!r}: {cfg.path} has no rows")
    missing = [c for c in columns if c not in rows[0]]
    if missing:
        raise ValueError(f"benchmark {cfg.name!r} (kind {cfg.kind}): {cfg.path} lacks columns {missing}; "
                         f"it has {sorted(rows[0])}")


def load_math(cfg: BenchmarkConfig) -> list[dict]:
    """AIME24 / MATH500. Expects columns ``problem`` and ``answer`` (and an id column if there is one):

    - ``HuggingFaceH4/aime_2024``, split train: id, problem, solution, answer, url, year;
    - ``AI-MO/aimo-validation-aime``, split train: id, problem, solution, answer, url — only the 2024 rows
      are kept, as SkyThought does;
    - ``HuggingFaceH4/MATH-500``, split test: problem, solution, answer, subject, level, unique_id.
    """
    rows = _rows(cfg)
    _require(rows, ("problem", "answer"), cfg)
    year = _YEAR_FILTERS.get(cfg.path)
    if year:
        rows = [r for r in rows if year in str(r.get("url") or "")]
    out = []
    for i, r in enumerate(rows):
        pid = next((r[k] for k in ("unique_id", "id") if r.get(k) is not None), i)
        out.append({"id": str(pid), "question": str(r["problem"]).strip(), "answer": str(r["answer"]).strip()})
    return out


def load_gpqa(cfg: BenchmarkConfig, option_seed: int = 0) -> list[dict]:
    """GPQA-Diamond: ``Idavidrein/gpqa``, subset ``gpqa_diamond``, split train (198 rows), columns
    ``Question``, ``Correct Answer``, ``Incorrect Answer 1``..``3`` and ``Record ID``.

    The four answers are shuffled per problem by ``shuffle_options`` keyed on the Record ID, so the gold letter
    differs between problems and a rerun asks exactly the same prompts. ``option_seed`` is separate from the
    sampling seed: runs with different sampling seeds are compared on the same option orders.
    """

    rows = _rows(cfg)
    columns = ("Question", "Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3")
    _require(rows, columns, cfg)
    out = []
    for i, r in enumerate(rows):
        pid = str(r.get("Record ID") or i)
        choices = [str(r[c]) for c in columns[1:]]
        text, gold = shuffle_options(str(r["Question"]), choices, 0, option_seed, problem_id=pid)
        out.append({"id": pid, "question": text, "answer": gold, "options": "ABCD"})
    return out


class _StringsOnly(pickle.Unpickler):
    """LiveCodeBench pickles a JSON *string*; unpickling a plain str needs no globals, so refusing every global
    makes a tampered file an error instead of code execution."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: private tests must be a pickled str")


def decode_private_tests(value: Any) -> list[dict]:
    """LiveCodeBench ``private_test_cases``: a JSON list of tests, or (in newer releases)
    base64(zlib(pickle(that JSON string)))."""
    if isinstance(value, list):
        return value
    if not value:
        return []
    try:
        return json.loads(value)
    except (json.JSONDecodeError, TypeError):
        pass
    data = _StringsOnly(io.BytesIO(zlib.decompress(base64.b64decode(value)))).load()
    return json.loads(data) if isinstance(data, (str, bytes)) else data


def load_livecodebench(cfg: BenchmarkConfig) -> list[dict]:
    """LiveCodeBench v2: ``livecodebench/code_generation_lite`` with ``subset: release_v2`` (511 problems, read
    as the release's jsonl files ``test.jsonl`` + ``test2.jsonl``), or a local file in that schema. Columns:
    question_title, question_content, platform, question_id, contest_id, contest_date, starter_code,
    difficulty, public_test_cases (a JSON string), private_test_cases (a JSON string, or base64+zlib+pickle of
    one), metadata.

    Tests are the public and the private ones, as LiveCodeBench grades (SkyThought runs only the private ones).
    Problems with "functional" (LeetCode call-based) tests are kept but marked ``unsupported``: CodeGrader runs
    stdin/stdout programs only, and grading a call-based problem as a script would fail every correct answer.
    """
    files = None
    if not file_builder(cfg.path) and cfg.path == LCB_REPO:
        if cfg.subset not in LCB_RELEASES:
            raise ValueError(f"benchmark {cfg.name!r}: subset {cfg.subset!r} is not a LiveCodeBench release; "
                             f"expected one of {sorted(LCB_RELEASES)}")
        files = [f"hf://datasets/{LCB_REPO}/{f}" for f in LCB_RELEASES[cfg.subset]]
    rows = _rows(cfg, data_files=files)
    _require(rows, ("question_content", "question_id", "public_test_cases", "private_test_cases"), cfg)
    out = []
    for r in rows:
        tests = json.loads(r["public_test_cases"] or "[]") + decode_private_tests(r["private_test_cases"])
        tests = [{"input": t["input"], "output": t["output"], "testtype": t.get("testtype", "stdin")}
                 for t in tests]
        problem = {"id": str(r["question_id"]), "question": str(r["question_content"]).strip(), "tests": tests,
                   "difficulty": r.get("difficulty"), "platform": r.get("platform")}
        kinds = sorted({t["testtype"] for t in tests})
        if not tests:
            problem["unsupported"] = "no tests"
        elif kinds != ["stdin"]:
            problem["unsupported"] = (f"test types {kinds}: CodeGrader runs stdin/stdout programs only, not "
                                      "functional (call-based) tests")
        out.append(problem)
    return out


def load_medical_mc(cfg: BenchmarkConfig) -> list[dict]:
    """MedQA, MedBullets op4 / op5 in MedReason's evaluation format (HuatuoGPT-o1's): rows with ``question``,
    ``options`` (a dict letter → text) and ``answer_idx`` (the gold letter; ``answer`` is its text). MedReason
    ships them as jsonl files (``eval_data/medbullets_op4.jsonl``, ``medbullets_op5.jsonl``, ...); HuatuoGPT-o1's
    ``evaluation/data/eval_data.json`` is one JSON object of such lists, selected by ``subset`` (e.g.
    ``MedQA_USLME_test``).

    The question is followed by one ``"A. text"`` line per option, as MedReason's eval script writes them.
    Options that are missing or empty are dropped (``datasets`` fills a key absent from some rows with None).
    """
    rows = _rows(cfg, field=cfg.subset)
    _require(rows, ("question", "options", "answer_idx"), cfg)
    out = []
    for i, r in enumerate(rows):
        options = {k.strip(): str(v).strip() for k, v in (r["options"] or {}).items()
                   if v is not None and str(v).strip()}
        letters = "".join(sorted(options))
        gold = str(r["answer_idx"]).strip()
        if gold not in options:
            raise ValueError(f"benchmark {cfg.name!r}, row {i}: answer_idx {gold!r} is not one of {letters!r}")
        text = str(r["question"]).strip() + "\n" + "\n".join(f"{k}. {options[k]}" for k in letters)
        pid = r.get("id")
        out.append({"id": str(i if pid is None else pid), "question": text, "answer": gold, "options": letters})
    return out


@dataclass(frozen=True)
class Kind:
    """A benchmark kind: how its problems load, how a question is asked, how a response is graded."""

    load: Callable[[BenchmarkConfig], list[dict]]
    instruction: Callable[[str], str]
    grade: Callable[..., list[dict]]  # (responses, problems, code_timeout_s=, workers=) -> one result per pair


# The registry of kinds: eval.generative[].kind is checked against it (forgetting/compose.py). A new kind is one
# entry: BENCHMARK_KINDS.add("name", Kind(loader, instruction, grader)).
BENCHMARK_KINDS: Registry[Kind] = Registry("eval.generative[].kind", {
    "math": Kind(load_math, lambda q: MATH_INSTRUCTION + " " + q, grade_math),
    "gpqa": Kind(load_gpqa, lambda q: GPQA_INSTRUCTION + " " + q, grade_multiple_choice),
    "livecodebench": Kind(load_livecodebench, lambda q: LCB_STDIN_INSTRUCTION + " " + q + "\n\n" + CODE_FENCE,
                          grade_code),
    "medical_mc": Kind(load_medical_mc, lambda q: MEDICAL_INSTRUCTION + "\n" + q, grade_multiple_choice),
})


def load_problems(cfg: BenchmarkConfig) -> list[dict]:
    """The benchmark's problems (the first ``limit`` of them if set)."""
    problems = BENCHMARK_KINDS[cfg.kind].load(cfg)
    return problems[: cfg.limit] if cfg.limit else problems


# ------------------------------------------------------------------------------------------------ prompts

def user_text(kind: str, question: str) -> str:
    """The user turn: the kind's instruction and the question."""
    return BENCHMARK_KINDS[kind].instruction(question)


def build_prompt(tokenizer, kind: str, question: str, prompt_template: str | None = None) -> tuple[str, list[int]]:
    """``(prompt_text, prompt_ids)`` for one problem.

    Without ``prompt_template``: the user turn in the chat template with the generation prompt and no system
    turn (``chat_prompt_text``), then ``<think>\\n`` unless the template already ends with it, encoded without
    adding special tokens (the template writes the BOS itself); exactly one leading BOS is checked. With
    ``prompt_template`` (a model without a chat template): ``prompt_template.format(question=question)``, started
    as training prompts are (``encode_prompt``: BOS only if the tokenizer adds one); no instruction.
    """
    if prompt_template is not None:
        text = prompt_template.format(question=question)
        return text, encode_prompt(tokenizer, text)
    if not getattr(tokenizer, "chat_template", None):
        name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
        raise ValueError(f"tokenizer {name!r} has no chat template: set the benchmark's prompt_template")
    text = chat_prompt_text(tokenizer, user_text(kind, question))
    if text.endswith(THINK.rstrip("\n")):
        text += "\n"
    elif not text.endswith(THINK):
        text += THINK
    return text, encode_rendered(tokenizer, text)
