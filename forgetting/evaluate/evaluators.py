"""The evaluators, as a registry: each says when it runs, what it reads (its part of the evaluate key) and what it
measures; ``forgetting.pipeline.evaluate_stage`` runs the active ones on one loaded model.

    python launch.py eval=smollm2 model=smollm2_135m method=base     # lm-eval task, corpora, base samples
    pytest tests/test_keys.py tests/test_pipeline.py

Adding an evaluator is one class here (``active``, ``spec``, ``run``) appended to ``EVALUATORS``, its config knobs
in ``EvalConfig``, and a test. ``run`` returns its metrics and its top-level columns per group, which make the
Avg. columns (``forgetting.evaluate.average``: defined once, over every evaluator).
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass, field
from fnmatch import fnmatch
from pathlib import Path
from typing import Any, ClassVar

from forgetting.toy.world import ToyWorld

# the generation seed of the held-out base samples behind pre/base_samples/kl: fixed, so that every run (any seed,
# any method) is scored on the same samples, and never a training seed's chunks
HELDOUT_SAMPLES_SEED = 999_983


@dataclass
class Evaluation:
    """One evaluate stage: the config, the store, the model evaluated, the toy world, the base model, the output
    directory, and the model and tokenizer once loaded (by ``pipeline.evaluate_stage``)."""

    c: Any
    store: Any
    model_art: Any
    world: Any
    base: Any
    out: Path | None = None
    model: Any = None
    tokenizer: Any = None
    members: dict[str, list[str]] = field(default_factory=lambda: {"pre": [], "down": []})
    # metric → its per-example values (forgetting.evaluate.examples), for the report's intervals and pairing
    examples: dict[str, dict] = field(default_factory=dict)


@dataclass(frozen=True)
class Metric:
    """A metric an evaluator declares: the names it covers (``pattern``, fnmatch-style), whether higher is better
    (None: a diagnostic with no better direction) and whether it enters its group's Avg. (``averaged``; None: when
    the evaluator lists it among its group's members at run time). The report reads these declarations from
    ``results.json`` (``metric_info``) instead of guessing from names."""

    pattern: str
    higher_is_better: bool | None = True
    averaged: bool | None = False


LOSSES = (Metric("*/loss", False), Metric("*/val_loss", False), Metric("*/kl", False), Metric("*perplexity*", False),
          Metric("*bits_per_byte*", False))


class Evaluator:
    name: ClassVar[str] = ""
    needs_model: ClassVar[bool] = True  # reads the model through transformers (False: loads its own engine)
    runs_last: ClassVar[bool] = False  # after the others (the generative benchmarks: vLLM takes the model's memory)
    metrics: ClassVar[tuple[Metric, ...]] = ()  # what it measures (first matching pattern wins)
    Knobs: ClassVar[type | None] = None  # its own settings (``eval.<knob>``), for an evaluator outside EvalConfig

    def describe(self, metric: str, ev: Evaluation) -> dict:
        """The declaration of one metric it produced: ``{"evaluator", "higher_is_better", "averaged"}``."""
        found = next((m for m in self.metrics if fnmatch(metric, m.pattern)), Metric("*", None))
        group = metric.split("/", 1)[0]
        averaged = found.averaged if found.averaged is not None else metric in ev.members.get(group, [])
        return {"evaluator": self.name, "higher_is_better": found.higher_is_better, "averaged": averaged}

    def active(self, ev: Evaluation) -> bool:
        raise NotImplementedError

    def spec(self, ev: Evaluation) -> dict:
        """What it reads, beyond the model: its part of the evaluate key (pure: nothing is loaded or generated)."""
        raise NotImplementedError

    def run(self, ev: Evaluation) -> dict[str, float]:
        raise NotImplementedError


class LmEval(Evaluator):
    """lm-eval tasks: the pre-existing abilities (``eval.tasks``, ``eval.groups``) and the downstream tasks
    (``eval.downstream``), the toy world's included; task directories of ``eval.include_path`` keyed by content."""

    name = "lmeval"
    metrics = (*LOSSES, Metric("*", True, None))
    KNOBS = ("tasks", "downstream", "groups", "fewshot", "metrics", "num_fewshot", "limit", "batch_size",
             "max_gen_toks", "hflm", "gen_kwargs")

    def active(self, ev):
        return bool(ev.c.eval.tasks or ev.c.eval.downstream)

    def spec(self, ev):
        e = ev.c.eval
        spec = {k: getattr(e, k) for k in self.KNOBS}
        spec["include_path"] = [{"path": p, "sha256": tree_digest(Path(p).expanduser())} for p in e.include_path]
        if self.chat_template(ev.c):  # keyed only when on: the evaluations made before it existed stay valid
            spec["chat"] = {"apply_chat_template": True, "fewshot_as_multiturn": e.fewshot_as_multiturn}
        if ev.world is not None:  # the toy tasks: the world's items in the dataset's prompt format
            spec["toy"] = {"world": ev.world, "prompt": ev.c.dataset.prompt_template}
        return spec

    def run(self, ev):
        from forgetting.evaluate.lmeval import (
            columns,
            extract,
            extract_keys,
            metric_key,
            per_doc,
            run_lmeval,
            write_toy_tasks,
        )

        c, e = ev.c, ev.c.eval
        include = [write_toy_tasks(ev.world.path, ev.out / "tasks", c.dataset.prompt_template, e.max_gen_toks)] \
            if ev.world is not None else []
        chat = self.chat_template(c)
        raw = run_lmeval(ev.model, ev.tokenizer, e.tasks + e.downstream, include_path=include + e.include_path,
                         num_fewshot=e.num_fewshot, fewshot=e.fewshot, limit=e.limit, batch_size=e.batch_size,
                         hflm_args=e.hflm, gen_kwargs=e.gen_kwargs, apply_chat_template=chat,
                         fewshot_as_multiturn=chat and e.fewshot_as_multiturn)
        metrics = {}
        if e.tasks:
            pre, top = columns(raw, e.tasks, e.groups, e.metrics, "pre")  # tasks, groups
            metrics.update(pre)
            ev.members["pre"] += top
        metrics.update(extract(raw, e.downstream, "down", e.metrics))
        for group, tasks in (("pre", e.tasks), ("down", e.downstream)):
            for task, name in zip(tasks, extract_keys(tasks, group, e.metrics)):
                rec = per_doc(raw, task, metric_key(e.metrics, task))
                if rec is not None:
                    ev.examples[name] = rec
        (ev.out / "lm_eval.json").write_text(json.dumps(raw["results"], indent=1, default=float))
        return metrics

    @staticmethod
    def chat_template(c) -> bool:
        """``eval.apply_chat_template``, null resolved: on for a model the run instruction-tunes — trained on
        chat-format rows, or carrying a recycled fine-tune given as a model (``method.recycle_tuned``: an Instruct
        model)."""
        if c.eval.apply_chat_template is not None:
            return c.eval.apply_chat_template
        m = c.method
        return m.train and (c.dataset.format == "chat" or (m.init == "recycle" and m.recycle_tuned is not None))


class TestSplit(Evaluator):
    """The downstream test split (``dataset.test_path`` / ``test_split``): greedy exact match and answer loss."""

    name = "test"
    metrics = (*LOSSES, Metric("*/exact_match", True, None))

    def active(self, ev):
        return ev.c.dataset.test_path is not None or ev.c.dataset.test_split is not None

    def spec(self, ev):

        c, d = ev.c, ev.c.dataset
        # keyed by the rows themselves, so an edited test file is a new evaluation
        return {"name": d.name, "rows": held_out_spec(c, "test"), "format": d.format,
                "prompt": d.prompt_template if d.format == "plain" else None, "answer_pattern": d.answer_pattern,
                "max_seq_len": c.trainer.max_seq_len, "max_new_tokens": c.eval.max_gen_toks,
                "batch_size": c.eval.batch_size}

    def run(self, ev):
        from forgetting.evaluate.downstream import score_test_split
        from forgetting.runtime import check_answers_fit, encode_example, prompt_ids

        c, tok = ev.c, ev.tokenizer
        test = test_split_rows(c)
        examples = [encode_example(tok, c, r["query"], r["response"]) for r in test]
        check_answers_fit(c, examples, "test rows")
        return score_test_split(ev.model, tok, test, [prompt_ids(tok, c, r["query"]) for r in test], examples,
                                name=c.dataset.name, answer_pattern=c.dataset.answer_pattern,
                                max_new_tokens=c.eval.max_gen_toks, batch_size=c.eval.batch_size, out_dir=ev.out,
                                per_example=ev.examples)


class HeldoutLoss(Evaluator):
    """The loss on the toy world's held-out pretraining documents (``eval.heldout_loss``)."""

    name = "heldout"
    metrics = LOSSES

    def active(self, ev):
        return ev.c.eval.heldout_loss and ev.world is not None

    def spec(self, ev):
        return {"world": ev.world, "seq_len": ev.c.model.pretrain.seq_len}

    def run(self, ev):
        from forgetting.data.encode import encode_text

        texts = ToyWorld(ev.world).heldout()
        return losses(ev, "pre/heldout/loss", [encode_text(ev.tokenizer, t, ev.c.model.pretrain.seq_len)
                                               for t in texts], texts)


class DownstreamLoss(Evaluator):
    """The answer-token loss on held-out rows of the fine-tuning task (``eval.downstream_loss``): paper 003's
    learning metric. The toy task's test rows → ``down/<task>/loss``; a dataset's validation rows
    (``dataset.validation_path`` / ``validation_split`` / ``validation_rows``) → ``down/<name>/val_loss``."""

    name = "downstream_loss"
    metrics = LOSSES

    def active(self, ev):
        c = ev.c
        return c.eval.downstream_loss and ((c.dataset.source == "toy" and ev.world is not None)
                                           or has_validation(c.dataset))

    def spec(self, ev):

        c, d = ev.c, ev.c.dataset
        if d.source == "toy":
            return {"world": ev.world, "prompt": d.prompt_template, "max_seq_len": c.trainer.max_seq_len,
                    "batch_size": c.eval.batch_size}
        return {"name": d.name, "rows": held_out_spec(c, "validation"), "format": d.format,
                "prompt": d.prompt_template if d.format == "plain" else None, "max_seq_len": c.trainer.max_seq_len,
                "batch_size": c.eval.batch_size}

    def run(self, ev):
        from forgetting.runtime import check_answers_fit, encode_example

        c, tok = ev.c, ev.tokenizer
        toy = c.dataset.source == "toy"
        held = ToyWorld(ev.world).down_test() if toy else validation_rows(c)
        rows = [encode_example(tok, c, r["query"], r["response"]) for r in held]
        check_answers_fit(c, rows, "toy test rows" if toy else "validation rows")
        name = f"down/{c.dataset.name.removeprefix('toy_')}/loss" if toy else f"down/{c.dataset.name}/val_loss"
        return losses(ev, name, rows, [r["query"] for r in held])


class Curve(Evaluator):
    """Convergence: the downstream loss (the toy task's test rows, or the dataset's test split) and the held-out
    loss of each training snapshot (``trainer.snapshot_steps``) → ``curve/<step>/down_loss``,
    ``curve/<step>/heldout_loss`` (toy world)."""

    name = "curve"
    metrics = (Metric("curve/*", False),)  # losses at each snapshot

    def active(self, ev):
        c = ev.c
        return bool(c.trainer.snapshot_steps) and c.method.train and c.method.parts()["init"].trains() and (
            c.dataset.source == "toy" or TestSplit().active(ev))  # from the config: no file read here

    def spec(self, ev):
        c = ev.c
        return {"steps": c.trainer.snapshot_steps, "world": ev.world, "test": TestSplit().spec(ev)
                if c.dataset.source != "toy" else None, "seq_len": c.model.pretrain.seq_len,
                "batch_size": c.eval.batch_size}

    def run(self, ev):
        from forgetting.data.encode import encode_text
        from forgetting.evaluate.heldout import rows_loss
        from forgetting.models import load_model
        from forgetting.runtime import encode_example

        c, tok = ev.c, ev.tokenizer
        test = ToyWorld(ev.world).down_test() if c.dataset.source == "toy" else test_split_rows(c)
        down = [encode_example(tok, c, r["query"], r["response"]) for r in test]
        held = [encode_text(tok, t, c.model.pretrain.seq_len)
                for t in ToyWorld(ev.world).heldout()] if ev.world is not None else []
        summary = ev.model_art.path / "train_summary.json"
        last = json.loads(summary.read_text())["steps"] if summary.exists() else None
        out = {}
        for n in sorted({*c.trainer.snapshot_steps, *([last] if last else [])}):
            path = ev.model_art.path / "snapshots" / f"step-{n}"
            if n == last:  # the curve ends at the trained model itself
                model = ev.model
            elif path.exists():  # in the dtype the final model is evaluated in: every point rounded alike
                model = load_model(path, c.model.dtype, False, None).to(ev.model.device)
            else:  # the run had fewer steps
                continue
            out[f"curve/{n}/down_loss"] = rows_loss(model, down, tok.pad_token_id, c.eval.batch_size)
            if held:
                out[f"curve/{n}/heldout_loss"] = rows_loss(model, held, tok.pad_token_id, c.eval.batch_size)
        return out


class Robustness(Evaluator):
    """The rise of the held-out loss under weight noise and NF4 (``eval.robust_noise``, ``eval.robust_nf4``;
    forgetting/evaluate/robust.py), on the toy world's held-out documents or the first offline corpus."""

    name = "robust"
    metrics = (Metric("robust/*/increase", False),)  # the loss's rise under noise / NF4

    def active(self, ev):
        e = ev.c.eval
        return bool(e.robust_noise or e.robust_nf4)

    def spec(self, ev):
        e = ev.c.eval
        return {"noise": e.robust_noise, "seeds": e.robust_seeds, "nf4": e.robust_nf4, "text": self._text_spec(ev)}

    def _text_spec(self, ev):
        if ev.world is not None:
            return {"world": ev.world, "seq_len": ev.c.model.pretrain.seq_len}
        if ev.c.eval.corpora:
            return {"corpus": ev.c.eval.corpora[0], **Corpora().spec(ev)}
        raise ValueError("robustness needs held-out text (checked by Config)")

    def run(self, ev):
        from forgetting.data.encode import encode_text
        from forgetting.evaluate.heldout import rows_loss
        from forgetting.evaluate.robust import robustness

        e, tok = ev.c.eval, ev.tokenizer
        spec = self._text_spec(ev)
        if "world" in spec:

            texts, max_len = ToyWorld(ev.world).heldout(), spec["seq_len"]
        else:
            from forgetting.data.offline import corpus

            texts, max_len = corpus(spec["corpus"], e.corpus_docs), e.corpus_max_len
        rows = [encode_text(tok, t, max_len) for t in texts]
        return robustness(ev.model, lambda: rows_loss(ev.model, rows, tok.pad_token_id, e.batch_size),
                          e.robust_noise, e.robust_seeds, e.robust_nf4)


class Sharpness(Evaluator):
    """Directional sharpness of the base's pretraining loss along the fine-tuning direction (``eval.sharpness``;
    forgetting/evaluate/sharpness.py), on the toy world's held-out documents; trained runs only."""

    name = "sharpness"
    metrics = (Metric("sharp/*", None),)  # curvature and its predictions: diagnostics, no better direction

    def active(self, ev):
        return ev.c.eval.sharpness and ev.world is not None and ev.base is not None and ev.model_art != ev.base

    def spec(self, ev):
        return {"base": ev.base, "world": ev.world, "docs": ev.c.eval.sharpness_docs,
                "seq_len": ev.c.model.pretrain.seq_len}

    def run(self, ev):
        from forgetting.data.encode import Collator, encode_text
        from forgetting.evaluate.sharpness import directional
        from forgetting.runtime import load

        c, tok = ev.c, ev.tokenizer
        texts = ToyWorld(ev.world).heldout()[: c.eval.sharpness_docs]
        batch = Collator(tok.pad_token_id)([encode_text(tok, t, c.model.pretrain.seq_len) for t in texts])

        def loss_of(model):
            return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                         labels=batch["labels"]).loss

        base = load(c, ev.base, dtype="float32")[0]
        return directional(base, {n: p.detach() for n, p in ev.model.named_parameters()}, loss_of)


class Corpora(Evaluator):
    """The loss on held-out real text available offline (``eval.corpora``: the standard library's code, prose)."""

    name = "corpora"
    metrics = LOSSES

    def active(self, ev):
        return bool(ev.c.eval.corpora)

    def spec(self, ev):
        from forgetting.data.offline import is_corpus_file, python_version
        from forgetting.store import input_sha256

        e = ev.c.eval  # the built-in corpora are this interpreter's standard library
        spec = {"names": e.corpora, "docs": e.corpus_docs, "max_len": e.corpus_max_len, "batch_size": e.batch_size,
                "python": python_version()}
        files = [n for n in e.corpora if is_corpus_file(n)]
        if files:  # an edited file is other text (absent without files: the keys made before it existed stay valid)
            spec["sha256"] = {n: input_sha256(Path(n).expanduser()) for n in files}
        return spec

    def run(self, ev):
        from forgetting.data.encode import encode_text
        from forgetting.data.offline import corpus, corpus_name

        e, out = ev.c.eval, {}
        for name in e.corpora:
            docs = corpus(name, e.corpus_docs)
            out.update(losses(ev, f"pre/{corpus_name(name)}/loss",
                              [encode_text(ev.tokenizer, d, e.corpus_max_len) for d in docs], docs))
        return out


class BaseSamples(Evaluator):
    """KL(base ‖ model) per token on held-out context-free samples of the base (``eval.base_samples``):
    E_x~base[log p_base(x) − log p_model(x)] / E[tokens], and the model's loss on them. The samples are the base's
    own distribution, untruncated — T = 1, top-p = 1, whatever the run's generator settings — so that the estimate
    is a KL (≥ 0, 0 only for the base); they start as ``eval.base_samples_starts`` declares, else as the run's
    context-free samples do (``method.starts``; the BOS alone by default)."""

    name = "base_samples"
    metrics = LOSSES

    def active(self, ev):
        return ev.c.eval.base_samples > 0

    def spec(self, ev):
        base = ev.base or ev.model_art
        return {"base": base, "samples": base_samples_spec(ev.c, base), "n": ev.c.eval.base_samples,
                "batch_size": ev.c.eval.batch_size}

    def run(self, ev):
        from forgetting.data.encode import encode_ids
        from forgetting.evaluate.examples import from_pairs
        from forgetting.evaluate.heldout import ratio, row_losses
        from forgetting.runtime import load

        c, base = ev.c, ev.base or ev.model_art
        samples = base_samples(c, ev.store, base)
        rows = [encode_ids(r["ids"], len(r["ids"])) for r in samples]
        pad, batch = ev.tokenizer.pad_token_id, c.eval.batch_size

        def score(out):  # the base's own losses on its samples: once per base, not once per evaluated model
            pairs = row_losses(ev.model if ev.model_art == base else load(c, base)[0], rows, pad, batch)
            (out / "losses.json").write_text(json.dumps(pairs))

        scored = ev.store.build("score", score_spec(c, base), score)
        on_base = [tuple(p) for p in json.loads((scored.path / "losses.json").read_text())]
        on_model = on_base if ev.model_art == base else row_losses(ev.model, rows, pad, batch)
        ids = [r["ids"] for r in samples]
        ev.examples["pre/base_samples/loss"] = from_pairs(on_model, ids)
        ev.examples["pre/base_samples/kl"] = from_pairs([(m - b, n) for (m, n), (b, _) in zip(on_model, on_base)],
                                                        ids)
        return {"pre/base_samples/loss": ratio(on_model),
                "pre/base_samples/kl": ratio(on_model) - ratio(on_base)}


class Generative(Evaluator):
    """Generative benchmarks (``eval.generative``: SkyThought-style reasoning, medical multiple choice), sampled by
    ``generator.backend`` and graded by their kind (``forgetting.evaluate.benchmarks.KINDS``)."""

    name = "generative"
    runs_last = True
    metrics = (*LOSSES, Metric("*", True, None))
    needs_model = False  # with vLLM the engine loads its own copy; with hf, run() loads it if nothing else did

    def active(self, ev):
        return bool(ev.c.eval.generative)

    def spec(self, ev):
        c = ev.c
        spec = {"benchmarks": [asdict(b) for b in c.eval.generative], "batch_size": c.eval.batch_size,
                "seed": c.seed}
        if c.generator.backend != "hf":  # sampled by another engine: other results
            spec["generator"] = {"backend": c.generator.backend, "dtype": c.generator.dtype or c.model.dtype}
        return spec

    def run(self, ev):
        from forgetting.evaluate.generative import evaluate_generative

        c, backend, model = ev.c, None, ev.model
        if c.generator.backend != "hf":
            from forgetting.generate.sources import make_backend
            from forgetting.runtime import free_gpu_memory, generation_model

            model = ev.model = None  # vLLM's engines load their own copy: give the GPU memory back first
            free_gpu_memory()
            backend = make_backend(c.generator.backend, *generation_model(c, ev.model_art), gen=c.generator)
        elif model is None:
            from forgetting.runtime import load

            model = ev.model = load(c, ev.model_art)[0]
        try:
            gen = evaluate_generative(model, ev.tokenizer, c.eval.generative, ev.out, backend=backend, seed=c.seed,
                                      batch_size=c.eval.batch_size, per_example=ev.examples)
        finally:
            if backend is not None:
                backend.close()
        for group in ev.members:  # each benchmark's accuracy (paper Table 5)
            ev.members[group] += [k for k in gen if k.startswith(f"{group}/") and k.endswith("/acc")]
        return gen


# the registry, in the order they run (``runs_last`` ones after the rest): these, then any registered from outside
# the package (a module named in FORGETTING_PARTS, imported before the config schema is built: forgetting.parts.load)
EVALUATORS: list[Evaluator] = [LmEval(), TestSplit(), HeldoutLoss(), DownstreamLoss(), Corpora(), BaseSamples(),
                               Robustness(), Sharpness(), Curve(), Generative()]


def register(cls: type[Evaluator]) -> type[Evaluator]:
    """Class decorator: add an evaluator (its ``name`` unique) to the registry; its ``Knobs`` become ``eval.<knob>``."""
    if any(x.name == cls.name for x in EVALUATORS):
        raise ValueError(f"an evaluator named {cls.name!r} is already registered")
    EVALUATORS.append(cls())
    return cls


def active(ev: Evaluation) -> list[Evaluator]:
    on = [x for x in EVALUATORS if x.active(ev)]
    return [x for x in on if not x.runs_last] + [x for x in on if x.runs_last]


def knob_fields() -> list[tuple]:
    """(name, type, field) of every registered evaluator's own knobs, for the eval schema (forgetting.compose)."""
    out = []
    for x in EVALUATORS:
        if x.Knobs is not None:
            out += [(f.name, f.type, field(default=f.default) if f.default is not dataclasses.MISSING
                     else field(default_factory=f.default_factory)) for f in dataclasses.fields(x.Knobs)]
    return out


def knobs_of(evaluator: Evaluator, e) -> Any:
    """An evaluator's own knobs, read from the eval config ``e`` (checked by its Knobs' ``__post_init__``)."""
    return evaluator.Knobs(**{f.name: getattr(e, f.name) for f in dataclasses.fields(evaluator.Knobs)})



def heldout_generator(c):
    """The generator settings of the held-out base samples: the run's (backend, lengths, batches), with the fixed
    seed and the base's own distribution, T = 1 and top-p = 1 (a KL on nucleus-truncated samples is not a KL)."""
    from dataclasses import replace

    return replace(c.generator, seed=HELDOUT_SAMPLES_SEED, temperature=1.0, top_p=1.0)


def heldout_starts(c) -> list:
    """The start tokens of the held-out samples: ``eval.base_samples_starts``, else ``method.starts``."""
    return list(c.eval.base_samples_starts if c.eval.base_samples_starts is not None else c.method.starts)


def base_samples_spec(c, base) -> dict:
    """The held-out base samples' sequence (a fixed seed, never a training seed's chunks)."""
    from forgetting.generate.sources import context_free_spec
    from forgetting.parts.context_free import starts_spec

    return context_free_spec(base, heldout_generator(c), c.model.dtype,
                             {"token": c.model.bos_token, "id": c.model.bos_token_id},
                             starts_spec(heldout_starts(c)))


def score_spec(c, base) -> dict:
    """The base's own losses on its held-out samples (a ``score`` artifact, one per base)."""
    return {"model": base, "samples": base_samples_spec(c, base), "n": c.eval.base_samples,
            "batch_size": c.eval.batch_size, "dtype": c.model.dtype}


def base_samples(c, store, base) -> list[dict]:
    """Held-out context-free samples of the base model (cached like training samples)."""
    from forgetting.generate import sources
    from forgetting.models import bos_token_id
    from forgetting.parts.context_free import resolve_starts, starts_spec
    from forgetting.runtime import generation_model, tokenizer_of

    tokenizer = tokenizer_of(c, base)
    bos = bos_token_id(tokenizer, c.model.bos_token_id, c.model.bos_token)
    starts = heldout_starts(c)
    return sources.context_free(store, base, heldout_generator(c), c.eval.base_samples, bos_id=bos,
                                load=lambda: generation_model(c, base), model_dtype=c.model.dtype,
                                bos={"token": c.model.bos_token, "id": c.model.bos_token_id},
                                starts=resolve_starts(tokenizer, starts, bos), starts_spec=starts_spec(starts))


def losses(ev: Evaluation, metric: str, rows: list[dict], ids: list) -> dict[str, float]:
    """``{metric: the token-weighted loss of the encoded rows}``, their per-row losses recorded as its examples."""
    from forgetting.evaluate.examples import from_pairs
    from forgetting.evaluate.heldout import ratio, row_losses

    pairs = row_losses(ev.model, rows, ev.tokenizer.pad_token_id, ev.c.eval.batch_size)
    ev.examples[metric] = from_pairs(pairs, ids)
    return {metric: ratio(pairs)}


def test_split_rows(c) -> list[dict]:
    """The downstream test split (``dataset.test_path`` / ``test_split``), at most ``eval.limit`` rows; [] if none."""
    d = c.dataset
    if d.test_path is None and d.test_split is None:
        return []
    from forgetting.data.formats import load_rows

    return load_rows(d, test=True)[: c.eval.limit]


def held_out_spec(c, which: str) -> dict:
    """What the test split (``which="test"``) or the validation rows are read from — a local file by its content's
    digest (an edited file is a new evaluation), a hub split by its name — with the row mapping and ``eval.limit``:
    computed without reading a row, so that a plan (and its key) never loads a hub dataset."""
    from forgetting.data.datasets import downstream_spec
    from forgetting.data.files import is_local, local_files
    from forgetting.store import input_sha256

    d = c.dataset
    file = d.test_path if which == "test" else d.validation_path
    split = d.test_split if which == "test" else d.validation_split
    if file is not None:
        source = {"file": file, **({"sha256": [input_sha256(f) for f in local_files(file)]} if is_local(file) else {})}
    elif split is not None:
        source = {"hub": d.path, "subset": d.subset, "split": split}
    else:  # the last validation_rows rows of the training source
        source = {"last": d.validation_rows, "of": {k: v for k, v in downstream_spec(d, None).items()
                                                    if k not in ("limit", "format", "prompt_template")}}
    mapping = {"builder": d.builder} if d.builder else {"query_field": d.query_field,
                                                         "response_field": d.response_field}
    return {**source, "rows": mapping, "limit": c.eval.limit}


def has_validation(d) -> bool:
    """Whether the dataset declares held-out validation rows."""
    return d.validation_path is not None or d.validation_split is not None or d.validation_rows > 0


def validation_rows(c) -> list[dict]:
    """The dataset's validation rows (``forgetting.data.formats.load_rows``), at most ``eval.limit``; [] if none."""
    if not has_validation(c.dataset):
        return []
    from forgetting.data.formats import load_rows

    return load_rows(c.dataset, validation=True)[: c.eval.limit]


def tree_digest(root: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file() and "__pycache__" not in p.parts:
            h.update(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()
