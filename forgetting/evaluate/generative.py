"""Generative evaluation (paper §3.2, Appendix C): sample answers, grade them, count self-corrections.

    pytest tests/evaluate/test_generative.py

For each benchmark: load its problems, build one prompt per problem, sample ``n_samples`` completions per
prompt through a generation backend (``HFBackend`` by default; any object with the same ``sample`` method,
e.g. ``VLLMBackend``, which ``evaluate_stage`` passes when ``generator.backend=vllm``), decode, grade with the
kind's grader, and write one record per sample to ``out_dir/records/<name>.jsonl``. Returns
``{group}/{name}/acc`` (mean over every graded sample, so AIME24 with 4 samples per problem averages 120
generations as the paper does), ``{group}/{name}/wait_per_response`` and
``{group}/{name}/length_tokens`` (the paper's Table 6), and ``{group}/{name}/n_unsupported`` when some problems
could not be graded (LiveCodeBench call-based problems: never generated, never counted in ``acc``).
``out_dir/summary.json`` holds the metrics and per-benchmark details.

Code is graded by ``CodeGrader`` (a sandboxed child process per test), in a few threads; math stays on the
main thread, where math-verify can bound sympy with SIGALRM.
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from collections import Counter
from pathlib import Path

from tqdm.auto import tqdm

from forgetting.config import BenchmarkConfig
from forgetting.data.jsonl import write_jsonl
from forgetting.evaluate.benchmarks import BENCHMARK_KINDS, build_prompt, load_problems
from forgetting.evaluate.examples import record
from forgetting.evaluate.graders import self_correction_stats
from forgetting.generate.hf import HFBackend

__all__ = ["evaluate_generative", "grade"]


def _check(benchmarks: list[BenchmarkConfig]) -> None:
    """What BenchmarkConfig's own checks leave open, before hours of generation rather than after."""
    names = [b.name for b in benchmarks]
    for b in benchmarks:
        if b.kind not in BENCHMARK_KINDS:
            raise ValueError(f"benchmark {b.name!r}: kind {b.kind!r} is unknown; expected one of "
                             f"{', '.join(BENCHMARK_KINDS)}")
        if b.max_new_tokens < 1 or not 0 < b.top_p <= 1:
            raise ValueError(f"benchmark {b.name!r}: needs max_new_tokens >= 1 and 0 < top_p <= 1; got "
                             f"{b.max_new_tokens}, {b.top_p}")
        if names.count(b.name) > 1:
            raise ValueError(f"benchmark name {b.name!r} appears twice: records would overwrite each other")


def _chunk_seed(seed: int, name: str, chunk: int) -> int:
    """Distinct, reproducible seeds per benchmark and chunk (the HF backend reseeds on every call)."""
    return int(hashlib.sha256(f"{seed}:{name}:{chunk}".encode()).hexdigest()[:8], 16)


def grade(kind: str, responses: list[str], problems: list[dict], *, code_timeout_s: float = 6.0,
          workers: int = 2) -> list[dict]:
    """Grader results, one per (response, problem) pair, in order (the kind's grader: ``BENCHMARK_KINDS``)."""
    return BENCHMARK_KINDS[kind].grade(responses, problems, code_timeout_s=code_timeout_s, workers=workers)


def _truncated(ids: list[int], eos: int | None, max_new_tokens: int) -> bool:
    """Stopped by the token limit rather than by EOS. Judged by length too: a backend whose pad id is the EOS id
    (R1-Distill's tokenizer) strips the EOS along with the padding."""
    return len(ids) >= max_new_tokens and (not ids or ids[-1] != eos)


def _run(bench: BenchmarkConfig, problems: list[dict], tokenizer, backend, *, seed: int, batch_size: int,
         code_timeout_s: float, grade_workers: int) -> tuple[list[dict], dict, dict]:
    supported = [p for p in problems if not p.get("unsupported")]
    unsupported = [p for p in problems if p.get("unsupported")]
    if not supported:
        raise ValueError(f"benchmark {bench.name!r}: none of its {len(problems)} problems can be graded "
                         f"({problems[0].get('unsupported') if problems else 'no problems'})")
    # by position, not id: nothing guarantees a benchmark's ids are unique
    prompts = [build_prompt(tokenizer, bench.kind, p["question"], bench.prompt_template) for p in supported]
    jobs = [(i, s) for i in range(len(supported)) for s in range(bench.n_samples)]  # problem-major

    completions: list[list[int]] = []
    # a backend that batches requests itself (vLLM) gets them all in one call: its GPUs stay busy, and its
    # per-request seeds then do not depend on eval.batch_size
    step = len(jobs) if getattr(backend, "whole_calls", False) else batch_size
    with tqdm(total=len(jobs), desc=f"{bench.name}: generate", unit="sample") as bar:
        for k, start in enumerate(range(0, len(jobs), step)):
            chunk = jobs[start:start + step]
            out = backend.sample([prompts[i][1] for i, _ in chunk], temperature=bench.temperature,
                                 top_p=bench.top_p, max_new_tokens=bench.max_new_tokens,
                                 seed=_chunk_seed(seed, bench.name, k), batch_size=batch_size)
            if len(out) != len(chunk):
                raise RuntimeError(f"backend returned {len(out)} completions for {len(chunk)} prompts")
            completions.extend(out)
            bar.update(len(chunk))

    eos = tokenizer.eos_token_id
    responses = [tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
                 for ids in completions]
    results = []
    with tqdm(total=len(jobs), desc=f"{bench.name}: grade", unit="sample") as bar:
        step = max(1, batch_size)
        for start in range(0, len(jobs), step):
            part = [supported[i] for i, _ in jobs[start:start + step]]
            results += grade(bench.kind, responses[start:start + step], part, code_timeout_s=code_timeout_s,
                             workers=grade_workers)
            bar.update(len(part))

    records = []
    for (i, s), ids, response, res in zip(jobs, completions, responses, results):
        p = supported[i]
        rec = {"id": p["id"], "sample": s, "prompt": prompts[i][0], "response": response,
               "extracted": res["extracted"], "correct": bool(res["correct"]),
               "n_tokens": len(ids), "truncated": _truncated(ids, eos, bench.max_new_tokens)}
        if "answer" in p:
            rec["gold"] = p["answer"]
        for key in ("status", "passed", "total", "detail"):
            if key in res:
                rec[key] = res[key]
        records.append(rec)
    for p in unsupported:
        records += [{"id": p["id"], "sample": s, "prompt": None, "response": None, "extracted": None,
                     "correct": None, "status": "unsupported", "detail": p["unsupported"]}
                    for s in range(bench.n_samples)]

    graded = [r for r in records if r["correct"] is not None]
    stats = self_correction_stats([r["response"] for r in graded], tokenizer)
    prefix = f"{bench.group}/{bench.name}"
    metrics = {f"{prefix}/acc": sum(r["correct"] for r in graded) / len(graded),
               f"{prefix}/wait_per_response": stats["wait_per_response"],
               f"{prefix}/length_tokens": stats["length_tokens"]}
    if unsupported:
        metrics[f"{prefix}/n_unsupported"] = float(len(unsupported))
    detail = {"kind": bench.kind, "group": bench.group, "path": bench.path, "subset": bench.subset,
              "split": bench.split, "n_problems": len(problems), "n_samples": bench.n_samples,
              "n_graded": len(graded), "n_unsupported": len(unsupported),
              "unsupported_ids": [p["id"] for p in unsupported],
              "truncated_frac": sum(r["truncated"] for r in graded) / len(graded),
              "statuses": dict(Counter(r["status"] for r in records if "status" in r)),
              "max_new_tokens": bench.max_new_tokens, "temperature": bench.temperature, "top_p": bench.top_p}
    by_difficulty: dict[str, list[bool]] = {}
    for (i, _), res in zip(jobs, results):
        if supported[i].get("difficulty"):
            by_difficulty.setdefault(str(supported[i]["difficulty"]), []).append(bool(res["correct"]))
    if by_difficulty:  # LiveCodeBench easy / medium / hard; the paper's LCB column may be their plain mean
        detail["acc_by_difficulty"] = {d: sum(v) / len(v) for d, v in sorted(by_difficulty.items())}
        detail["acc_difficulty_mean"] = sum(detail["acc_by_difficulty"].values()) / len(by_difficulty)
    return records, metrics, detail


def problem_examples(records: list[dict]) -> dict:
    """The accuracy's examples (``forgetting.evaluate.examples``) by problem: each graded problem's mean over its
    samples, weighted by their number, so that a bootstrap resamples problems (AIME's 4 samples of one problem are
    not 4 independent examples)."""

    by_problem: dict[str, list[bool]] = {}
    for r in records:
        if r["correct"] is not None:
            by_problem.setdefault(str(r["id"]), []).append(bool(r["correct"]))
    ids = list(by_problem)
    return record([sum(v) / len(v) for v in by_problem.values()], ids, [len(v) for v in by_problem.values()])


def evaluate_generative(model, tokenizer, benchmarks: list[BenchmarkConfig], out_dir: Path, *, backend=None,
                        seed: int = 0, batch_size: int = 8, code_timeout_s: float = 6.0,
                        grade_workers: int = 2, per_example: dict | None = None) -> dict[str, float]:
    """Generate, grade and summarise every benchmark; returns the metrics (also in ``out_dir/summary.json``).

    ``seed`` is the sampling seed; ``batch_size`` the number of prompts per backend call; ``code_timeout_s``
    the wall time per code test (SkyThought: 6 s); ``grade_workers`` the threads running code tests;
    ``per_example``: filled with each accuracy's examples (:func:`problem_examples`).
    """
    _check(benchmarks)
    if backend is None:

        backend = HFBackend(model, tokenizer)
    out_dir = Path(out_dir)
    (out_dir / "records").mkdir(parents=True, exist_ok=True)
    metrics: dict[str, float] = {}
    details: dict[str, dict] = {}
    for bench in benchmarks:
        started = time.time()
        problems = load_problems(bench)
        records, m, detail = _run(bench, problems, tokenizer, backend, seed=seed, batch_size=batch_size,
                                  code_timeout_s=code_timeout_s, grade_workers=grade_workers)
        write_jsonl(out_dir / "records" / f"{bench.name}.jsonl", records)
        if per_example is not None:
            per_example[f"{bench.group}/{bench.name}/acc"] = problem_examples(records)
        detail["seconds"] = round(time.time() - started, 1)
        metrics.update(m)
        details[bench.name] = detail
    bad = {k: v for k, v in metrics.items() if not math.isfinite(v)}
    if bad:
        raise ValueError(f"non-finite metrics: {bad}")
    summary = {"metrics": metrics, "seed": seed, "benchmarks": details}
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    return metrics
