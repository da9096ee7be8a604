"""The evaluators, as a registry: each says when it runs, what it reads (its part of the evaluate key) and what it
measures, and owns its settings; ``forgetting.pipeline.evaluate_stage`` runs the active ones on one loaded model.

    python launch.py eval=smollm2 model=smollm2_135m method=base     # lm-eval task, corpora, base samples
    python launch.py method=ft 'eval.robust_noise=[0.01]' eval.sharpness=true   # two evaluators' own knobs
    pytest tests/test_keys.py tests/test_pipeline.py tests/evaluate/

An evaluator is a class registered with :func:`register` — here in the order they run (``runs_last`` ones after
the rest), then any registered from outside the package — with ``active``, ``spec``, ``run`` and its declared
``metrics``. Its own settings are its ``Knobs`` dataclass: each field is ``eval.<field>`` on the command line
(``forgetting.compose`` adds them to the few settings several evaluators share, ``forgetting.config.EvalCore``),
checked by the dataclass's ``__post_init__`` when the config is validated; what a check normalizes (Generative's
entries) is written back to the config every consumer reads. ``self.knobs(ev)`` reads them typed. Adding an
evaluator is its class (here, or in a module of your own named in ``FORGETTING_PLUGINS``) and its test: nothing in
the pipeline, the schema or the composition changes. ``run`` returns its metrics and its top-level columns per
group, which make the Avg. columns (``forgetting.evaluate.average``: defined once, over every evaluator).
"""
from __future__ import annotations

import dataclasses
import json
import os
import typing
from dataclasses import asdict, dataclass, field
from fnmatch import fnmatch
from pathlib import Path
from typing import Any, ClassVar, Optional

from forgetting.config import BenchmarkConfig, EvalCore, StartToken
from forgetting.data.datasets import downstream_spec
from forgetting.data.encode import Collator, encode_ids, encode_text
from forgetting.data.files import is_local, local_files
from forgetting.data.formats import load_rows
from forgetting.data.offline import corpus, corpus_name, is_corpus_file, python_version
from forgetting.errors import check as _check
from forgetting.evaluate.downstream import score_test_split
from forgetting.evaluate.examples import from_pairs
from forgetting.evaluate.generative import evaluate_generative
from forgetting.evaluate.heldout import ratio, row_losses, rows_loss
from forgetting.evaluate.lmeval import columns, extract, extract_keys, metric_key, per_doc, run_lmeval, write_toy_tasks
from forgetting.evaluate.robust import robustness
from forgetting.evaluate.sharpness import directional
from forgetting.generate import sources
from forgetting.generate.backends import BACKENDS
from forgetting.generate.sources import context_free_spec, make_backend
from forgetting.models import bos_token_id, load_model
from forgetting.parts.context_free import resolve_starts, starts_spec
from forgetting.presets import option
from forgetting.registry import Registry, copy_field
from forgetting.runtime import (
    check_answers_fit,
    encode_example,
    free_gpu_memory,
    generation_model,
    load,
    prompt_ids,
    tokenizer_of,
)
from forgetting.store import Artifact, Store, input_sha256
from forgetting.toy.world import ToyWorld

# the generation seed of the held-out base samples behind pre/base_samples/kl: fixed, so that every run (any seed,
# any method) is scored on the same samples, and never a training seed's chunks
HELDOUT_SAMPLES_SEED = 999_983


@dataclass
class Evaluation:
    """One evaluate stage: the config, the store, the model evaluated, the toy world, the base model, the output
    directory, and the model and tokenizer once loaded (by ``pipeline.evaluate_stage``)."""

    c: Any  # the run's forgetting.compose.Config (the layer above: not imported here)
    store: Store | None  # None when only planning (--plan): nothing is read or written
    model_art: Artifact
    world: Artifact | None  # the toy world, when the run builds one
    base: Artifact | None
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


@dataclass
class NoKnobs:
    """The knobs of an evaluator that reads only the shared settings (``forgetting.config.EvalCore``)."""


class Evaluator:
    name: ClassVar[str] = ""
    needs_model: ClassVar[bool] = True  # reads the model through transformers (False: loads its own engine)
    runs_last: ClassVar[bool] = False  # after the others (the generative benchmarks: vLLM takes the model's memory)
    metrics: ClassVar[tuple[Metric, ...]] = ()  # what it measures (first matching pattern wins)
    # its own settings: each field is ``eval.<field>`` (its default and comment with it), checked by the
    # dataclass's ``__post_init__``; the settings several evaluators read are ``EvalCore``'s
    Knobs: ClassVar[type | None] = NoKnobs

    def knobs(self, ev: Evaluation) -> Any:
        """Its own knobs, typed, as the run's eval config holds them (:func:`knobs_of`)."""
        return knobs_of(self, ev.c.eval)

    def check(self, c) -> None:
        """Refuse (``ConfigError``, one line) what it cannot work with in the rest of a run's config ``c`` (another
        group's settings); called for every registered evaluator when the config is validated."""

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


# the registry, in the order they run (``runs_last`` ones after the rest): the classes below, in the order they are
# defined, then any registered from outside the package (a module named in FORGETTING_PLUGINS, imported before the
# config schema is built: forgetting.parts.load)
EVALUATORS: Registry[Evaluator] = Registry("evaluator")


def _knobs_class(evaluator) -> type:
    return evaluator.Knobs or NoKnobs


def register(cls: type[Evaluator]) -> type[Evaluator]:
    """Class decorator: add an evaluator (one instance, under its unique ``name``) to the registry; its ``Knobs``
    become ``eval.<knob>``. A knob name has one owner: one evaluator, or ``EvalCore`` (the shared settings)."""
    owners = {f.name: "EvalCore" for f in dataclasses.fields(EvalCore)}
    for x in EVALUATORS.values():
        if x.name != cls.name:  # the same name twice is refused by the registry itself
            owners.update(dict.fromkeys((f.name for f in dataclasses.fields(_knobs_class(x))), x.name))
    for f in dataclasses.fields(_knobs_class(cls)):
        if f.name in owners:
            raise TypeError(f"evaluator {cls.name}: knob {f.name!r} is already a knob of {owners[f.name]}: expected "
                            "a new name")
    EVALUATORS.add(cls.name, cls())
    return cls


def active(ev: Evaluation) -> list[Evaluator]:
    on = [x for x in EVALUATORS.values() if x.active(ev)]
    return [x for x in on if not x.runs_last] + [x for x in on if x.runs_last]


def knob_fields() -> list[tuple]:
    """(name, type, field) of every registered evaluator's own knobs, in registry order, for the eval group's
    schema (``forgetting.compose`` adds them to ``EvalCore``)."""
    out = []
    for x in EVALUATORS.values():
        cls = _knobs_class(x)
        hints = typing.get_type_hints(cls)
        out += [(f.name, hints[f.name], copy_field(f)) for f in dataclasses.fields(cls)]
    return out


def check_knobs(e) -> None:
    """Check the eval config ``e`` with every registered evaluator's ``Knobs`` (``__post_init__``), active or not
    (a bad value in a sweep fails before it runs), and write back what a check normalized (Generative's entries),
    so that every consumer of the config, the evaluate key included, reads the result."""
    for x in EVALUATORS.values():
        cls = _knobs_class(x)
        knobs = cls(**{f.name: getattr(e, f.name) for f in dataclasses.fields(cls)})
        for f in dataclasses.fields(cls):
            setattr(e, f.name, getattr(knobs, f.name))


def knobs_of(evaluator, e) -> Any:
    """An evaluator's (instance's or class's) own knobs, typed, as the eval config ``e`` holds them. They were
    checked and normalized when the config was validated (:func:`check_knobs`) and are not again here: a check may
    read what only the composition sees (the eval options of ``eval.generative_from``, on its search path)."""
    cls = _knobs_class(evaluator)
    knobs = object.__new__(cls)
    for f in dataclasses.fields(cls):
        object.__setattr__(knobs, f.name, getattr(e, f.name))
    return knobs


@dataclass
class LmEvalKnobs:
    # lm-eval tasks for the pre-existing abilities; "toy_*" tasks are written from the toy world
    tasks: list[str] = field(default_factory=lambda: ["toy_facts", "toy_categories", "toy_agreement", "toy_patterns"])
    downstream: list[str] = field(default_factory=lambda: ["toy_arith"])
    # lm-eval tasks averaged into one column, e.g. commonsense: [arc_easy, ...] → pre/commonsense/acc
    groups: dict[str, list[str]] = field(default_factory=dict)
    fewshot: dict[str, int] = field(default_factory=dict)  # per-task shots, e.g. gsm8k: 5 (paper Appendix C)
    # which lm-eval metric,filter key each task reports (default: acc,none for multiple choice)
    metrics: dict[str, str] = field(default_factory=lambda: {"toy_arith": "exact_match,strict-match"})
    num_fewshot: Optional[int] = None
    # HFLM's own arguments. add_bos_token unset or true: contexts start as tokenizer(text) starts them, which is how
    # training rows start (forgetting/data/encode.py); false would drop a BOS the model was trained with
    hflm: dict[str, Any] = field(default_factory=lambda: {"add_bos_token": True})
    # directories of lm-eval task YAMLs, indexed with (and overriding same-named) built-in tasks: local copies
    # of benchmarks, or your own tasks
    include_path: list[str] = field(default_factory=list)
    # simple_evaluate's gen_kwargs: generation settings applied to every generate_until task (e.g. max_gen_toks)
    gen_kwargs: dict[str, Any] = field(default_factory=dict)
    # simple_evaluate's apply_chat_template: prompts (and few-shot exemplars) in the tokenizer's chat template, as
    # instruction-tuned models are scored (Tülu 3 / OLMES; paper 004 App. B). null: on when the evaluated model is
    # instruction-tuned by the run itself — trained on chat-format rows (dataset.format=chat) or carrying a recycled
    # fine-tune given as a model (method.recycle_tuned, e.g. an Instruct model) — off otherwise (a base model; set
    # true for a model that is instruction-tuned already)
    apply_chat_template: Optional[bool] = False
    # simple_evaluate's fewshot_as_multiturn: with the chat template, each exemplar as its own user/assistant turns
    # rather than all in the first user turn
    fewshot_as_multiturn: bool = False

    def __post_init__(self) -> None:
        for path in self.include_path:
            _check(os.path.isdir(os.path.expanduser(path)), "eval.include_path", path,
                   "an existing directory of lm-eval task YAMLs")


@register
class LmEval(Evaluator):
    """lm-eval tasks: the pre-existing abilities (``eval.tasks``, ``eval.groups``) and the downstream tasks
    (``eval.downstream``), the toy world's included; task directories of ``eval.include_path`` keyed by content."""

    name = "lmeval"
    Knobs = LmEvalKnobs
    metrics = (*LOSSES, Metric("*", True, None))

    def active(self, ev):
        k = self.knobs(ev)
        return bool(k.tasks or k.downstream)

    def spec(self, ev):
        k, e = self.knobs(ev), ev.c.eval
        spec = {n: getattr(k, n) for n in ("tasks", "downstream", "groups", "fewshot", "metrics", "num_fewshot",
                                            "hflm", "gen_kwargs")}
        spec.update(limit=e.limit, batch_size=e.batch_size, max_gen_toks=e.max_gen_toks)
        spec["include_path"] = [{"path": p, "sha256": tree_digest(Path(p).expanduser())} for p in k.include_path]
        if self.chat_template(ev.c):  # keyed only when on: the evaluations made before it existed stay valid
            spec["chat"] = {"apply_chat_template": True, "fewshot_as_multiturn": k.fewshot_as_multiturn}
        if ev.world is not None:  # the toy tasks: the world's items in the dataset's prompt format
            spec["toy"] = {"world": ev.world, "prompt": ev.c.dataset.prompt_template}
        return spec

    def run(self, ev):

        c, e, k = ev.c, ev.c.eval, self.knobs(ev)
        include = [write_toy_tasks(ev.world.path, ev.out / "tasks", c.dataset.prompt_template, e.max_gen_toks)] \
            if ev.world is not None else []
        chat = self.chat_template(c)
        raw = run_lmeval(ev.model, ev.tokenizer, k.tasks + k.downstream, include_path=include + k.include_path,
                         num_fewshot=k.num_fewshot, fewshot=k.fewshot, limit=e.limit, batch_size=e.batch_size,
                         hflm_args=k.hflm, gen_kwargs=k.gen_kwargs, apply_chat_template=chat,
                         fewshot_as_multiturn=chat and k.fewshot_as_multiturn)
        metrics = {}
        if k.tasks:
            pre, top = columns(raw, k.tasks, k.groups, k.metrics, "pre")  # tasks, groups
            metrics.update(pre)
            ev.members["pre"] += top
        metrics.update(extract(raw, k.downstream, "down", k.metrics))
        for group, tasks in (("pre", k.tasks), ("down", k.downstream)):
            for task, name in zip(tasks, extract_keys(tasks, group, k.metrics)):
                rec = per_doc(raw, task, metric_key(k.metrics, task))
                if rec is not None:
                    ev.examples[name] = rec
        (ev.out / "lm_eval.json").write_text(json.dumps(raw["results"], indent=1, default=float))
        return metrics

    @classmethod
    def chat_template(cls, c) -> bool:
        """``eval.apply_chat_template``, null resolved: on for a model the run instruction-tunes — trained on
        chat-format rows, or carrying a recycled fine-tune given as a model (``method.recycle_tuned``: an Instruct
        model)."""
        stated = knobs_of(cls, c.eval).apply_chat_template
        if stated is not None:
            return stated
        m = c.method
        return m.train and (c.dataset.format == "chat" or (m.init == "recycle" and m.recycle_tuned is not None))


@register
class TestSplit(Evaluator):
    """The downstream test split (``dataset.test_path`` / ``test_split``): greedy exact match and answer loss."""

    name = "test"
    metrics = (*LOSSES, Metric("*/exact_match", True, None))

    def active(self, ev):
        return has_test_split(ev.c.dataset)

    def spec(self, ev):
        return test_split_spec(ev.c)

    def run(self, ev):

        c, tok = ev.c, ev.tokenizer
        test = test_split_rows(c)
        examples = [encode_example(tok, c, r["query"], r["response"]) for r in test]
        check_answers_fit(c, examples, "test rows")
        return score_test_split(ev.model, tok, test, [prompt_ids(tok, c, r["query"]) for r in test], examples,
                                name=c.dataset.name, answer_pattern=c.dataset.answer_pattern,
                                max_new_tokens=c.eval.max_gen_toks, batch_size=c.eval.batch_size, out_dir=ev.out,
                                per_example=ev.examples)


@dataclass
class HeldoutKnobs:
    heldout_loss: bool = True  # mean token loss on held-out pretraining-distribution text (paper 003)


@register
class HeldoutLoss(Evaluator):
    """The loss on the toy world's held-out pretraining documents (``eval.heldout_loss``)."""

    name = "heldout"
    Knobs = HeldoutKnobs
    metrics = LOSSES

    def active(self, ev):
        return self.knobs(ev).heldout_loss and ev.world is not None

    def spec(self, ev):
        return {"world": ev.world, "seq_len": ev.c.model.pretrain.seq_len}

    def run(self, ev):

        texts = ToyWorld(ev.world).heldout()
        return losses(ev, "pre/heldout/loss", [encode_text(ev.tokenizer, t, ev.c.model.pretrain.seq_len)
                                               for t in texts], texts)


@dataclass
class DownstreamLossKnobs:
    # the answer-token loss on held-out rows of the fine-tuning task: paper 003's learning metric, the x axis of the
    # learning–forgetting frontier. The toy task's test rows → down/<task>/loss; a dataset's validation rows
    # (dataset.validation_*) → down/<name>/val_loss (a dataset's test split reports down/<name>/loss already)
    downstream_loss: bool = False


@register
class DownstreamLoss(Evaluator):
    """The answer-token loss on held-out rows of the fine-tuning task (``eval.downstream_loss``): paper 003's
    learning metric. The toy task's test rows → ``down/<task>/loss``; a dataset's validation rows
    (``dataset.validation_path`` / ``validation_split`` / ``validation_rows``) → ``down/<name>/val_loss``."""

    name = "downstream_loss"
    Knobs = DownstreamLossKnobs
    metrics = LOSSES

    def active(self, ev):
        c = ev.c
        return self.knobs(ev).downstream_loss and ((c.dataset.source == "toy" and ev.world is not None)
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

        c, tok = ev.c, ev.tokenizer
        toy = c.dataset.source == "toy"
        held = ToyWorld(ev.world).down_test() if toy else validation_rows(c)
        rows = [encode_example(tok, c, r["query"], r["response"]) for r in held]
        check_answers_fit(c, rows, "toy test rows" if toy else "validation rows")
        name = f"down/{c.dataset.name.removeprefix('toy_')}/loss" if toy else f"down/{c.dataset.name}/val_loss"
        return losses(ev, name, rows, [r["query"] for r in held])


@register
class Corpora(Evaluator):
    """The loss on held-out real text available offline (``eval.corpora``: the standard library's code, prose);
    its settings are shared (``EvalCore``): Robustness measures on the first corpus without the toy world."""

    name = "corpora"
    metrics = LOSSES

    def active(self, ev):
        return bool(ev.c.eval.corpora)

    def spec(self, ev):
        return corpora_spec(ev.c.eval)

    def run(self, ev):

        e, out = ev.c.eval, {}
        for name in e.corpora:
            docs = corpus(name, e.corpus_docs)
            out.update(losses(ev, f"pre/{corpus_name(name)}/loss",
                              [encode_text(ev.tokenizer, d, e.corpus_max_len) for d in docs], docs))
        return out


@dataclass
class BaseSamplesKnobs:
    # > 0: KL(base ‖ model) per token on this many held-out context-free samples of the base model (the quantity
    # CFS's extra loss term approximates, paper 000 §2) → pre/base_samples/kl; the same samples for every run
    base_samples: int = 0
    # the start tokens of those samples (entries as method.starts'); null: the run's context-free starts,
    # method.starts (the BOS alone by default), so that CFS and its KL cover the same distribution
    base_samples_starts: Optional[list[StartToken]] = None

    def __post_init__(self) -> None:
        _check(self.base_samples >= 0, "eval.base_samples", self.base_samples, "an integer >= 0")


@register
class BaseSamples(Evaluator):
    """KL(base ‖ model) per token on held-out context-free samples of the base (``eval.base_samples``):
    E_x~base[log p_base(x) − log p_model(x)] / E[tokens], and the model's loss on them. The samples are the base's
    own distribution, untruncated — T = 1, top-p = 1, whatever the run's generator settings — so that the estimate
    is a KL (≥ 0, 0 only for the base); they start as ``eval.base_samples_starts`` declares, else as the run's
    context-free samples do (``method.starts``; the BOS alone by default)."""

    name = "base_samples"
    Knobs = BaseSamplesKnobs
    metrics = LOSSES

    def active(self, ev):
        return self.knobs(ev).base_samples > 0

    def spec(self, ev):
        base = ev.base or ev.model_art
        return {"base": base, "samples": base_samples_spec(ev.c, base), "n": self.knobs(ev).base_samples,
                "batch_size": ev.c.eval.batch_size}

    def run(self, ev):

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


@dataclass
class RobustKnobs:
    # robustness to weight perturbation (paper 003 §3.4; forgetting/evaluate/robust.py): the rise of the held-out
    # loss under Gaussian noise W + γ‖W‖_F·Z/‖Z‖_F per weight matrix, for each γ (paper: 0.009–0.025), averaged over
    # robust_seeds draws → robust/noise_<γ>/increase; and under NF4 4-bit quantize-dequantize → robust/nf4/increase.
    # On the toy world's held-out documents, else on the first of eval.corpora
    robust_noise: list[float] = field(default_factory=list)
    robust_seeds: int = 3
    robust_nf4: bool = False

    def __post_init__(self) -> None:
        for gamma in self.robust_noise:
            _check(gamma > 0, "eval.robust_noise", gamma, "noise scales > 0")
        _check(self.robust_seeds > 0, "eval.robust_seeds", self.robust_seeds, "a positive integer")


@register
class Robustness(Evaluator):
    """The rise of the held-out loss under weight noise and NF4 (``eval.robust_noise``, ``eval.robust_nf4``;
    forgetting/evaluate/robust.py), on the toy world's held-out documents or the first offline corpus."""

    name = "robust"
    Knobs = RobustKnobs
    metrics = (Metric("robust/*/increase", False),)  # the loss's rise under noise / NF4

    def active(self, ev):
        k = self.knobs(ev)
        return bool(k.robust_noise or k.robust_nf4)

    def check(self, c):
        k = knobs_of(self, c.eval)
        _check(not (k.robust_noise or k.robust_nf4) or c.needs_world() or bool(c.eval.corpora), "eval.robust_noise",
               k.robust_noise, "held-out text to measure on: the toy world, or eval.corpora (e.g. [stdlib_prose])")

    def spec(self, ev):
        k = self.knobs(ev)
        return {"noise": k.robust_noise, "seeds": k.robust_seeds, "nf4": k.robust_nf4, "text": self._text_spec(ev)}

    def _text_spec(self, ev):
        if ev.world is not None:
            return {"world": ev.world, "seq_len": ev.c.model.pretrain.seq_len}
        if ev.c.eval.corpora:
            return {"corpus": ev.c.eval.corpora[0], **corpora_spec(ev.c.eval)}
        raise ValueError("robustness needs held-out text (checked by Robustness.check)")

    def run(self, ev):

        e, k, tok = ev.c.eval, self.knobs(ev), ev.tokenizer
        spec = self._text_spec(ev)
        if "world" in spec:

            texts, max_len = ToyWorld(ev.world).heldout(), spec["seq_len"]
        else:

            texts, max_len = corpus(spec["corpus"], e.corpus_docs), e.corpus_max_len
        rows = [encode_text(tok, t, max_len) for t in texts]
        return robustness(ev.model, lambda: rows_loss(ev.model, rows, tok.pad_token_id, e.batch_size),
                          k.robust_noise, k.robust_seeds, k.robust_nf4)


@dataclass
class SharpnessKnobs:
    # directional sharpness along θ_ft − θ_base on the toy world's held-out documents (the first sharpness_docs):
    # sharp/direction/{curvature,predicted_eq6,predicted_taylor,observed,norm} (evaluate/sharpness.py; small models)
    sharpness: bool = False
    sharpness_docs: int = 64

    def __post_init__(self) -> None:
        _check(self.sharpness_docs > 0, "eval.sharpness_docs", self.sharpness_docs, "a positive integer")


@register
class Sharpness(Evaluator):
    """Directional sharpness of the base's pretraining loss along the fine-tuning direction (``eval.sharpness``;
    forgetting/evaluate/sharpness.py), on the toy world's held-out documents; trained runs only."""

    name = "sharpness"
    Knobs = SharpnessKnobs
    metrics = (Metric("sharp/*", None),)  # curvature and its predictions: diagnostics, no better direction

    def active(self, ev):
        return self.knobs(ev).sharpness and ev.world is not None and ev.base is not None and ev.model_art != ev.base

    def spec(self, ev):
        return {"base": ev.base, "world": ev.world, "docs": self.knobs(ev).sharpness_docs,
                "seq_len": ev.c.model.pretrain.seq_len}

    def run(self, ev):

        c, tok = ev.c, ev.tokenizer
        texts = ToyWorld(ev.world).heldout()[: self.knobs(ev).sharpness_docs]
        batch = Collator(tok.pad_token_id)([encode_text(tok, t, c.model.pretrain.seq_len) for t in texts])

        def loss_of(model):
            return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                         labels=batch["labels"]).loss

        base = load(c, ev.base, dtype="float32")[0]
        return directional(base, {n: p.detach() for n, p in ev.model.named_parameters()}, loss_of)


@register
class Curve(Evaluator):
    """Convergence: the downstream loss (the toy task's test rows, or the dataset's test split) and the held-out
    loss of each training snapshot (``trainer.snapshot_steps``) → ``curve/<step>/down_loss``,
    ``curve/<step>/heldout_loss`` (toy world)."""

    name = "curve"
    metrics = (Metric("curve/*", False),)  # losses at each snapshot

    def active(self, ev):
        c = ev.c
        return bool(c.trainer.snapshot_steps) and c.method.train and c.method.parts()["init"].trains() and (
            c.dataset.source == "toy" or has_test_split(c.dataset))  # from the config: no file read here

    def spec(self, ev):
        c = ev.c
        return {"steps": c.trainer.snapshot_steps, "world": ev.world, "test": test_split_spec(c)
                if c.dataset.source != "toy" else None, "seq_len": c.model.pretrain.seq_len,
                "batch_size": c.eval.batch_size}

    def run(self, ev):

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


@dataclass
class GenerativeKnobs:
    generative: list[BenchmarkConfig] = field(default_factory=list)
    # other eval options (conf/eval/) whose generative benchmarks come first, in order: a suite made of suites
    # (r1_suite = reasoning + medical) without copying their lists
    generative_from: list[str] = field(default_factory=list)
    # Applied to every entry of ``generative`` when the config is validated (so every consumer, and the evaluation
    # key, sees the result in the entries): caps on problems per benchmark and new tokens per answer (debug=dry),
    # and a directory holding each benchmark as a local file, <name>.jsonl / .json / .parquet in the hub
    # dataset's schema, in place of each entry's path. null: the entries as written.
    generative_limit: Optional[int] = None
    generative_max_new_tokens: Optional[int] = None
    benchmark_dir: Optional[str] = None

    def __post_init__(self) -> None:
        for key in ("generative_limit", "generative_max_new_tokens"):
            cap = getattr(self, key)
            _check(cap is None or cap > 0, f"eval.{key}", cap, "a positive integer or null")
        if self.generative_from:  # idempotent: a config validated again does not list a benchmark twice
            have = {b.name for b in self.generative}
            self.generative = [*(b for b in _suite_benchmarks(self.generative_from) if b.name not in have),
                               *self.generative]
        _check(self.benchmark_dir is None or bool(self.generative), "eval.benchmark_dir", self.benchmark_dir,
               "null: this eval suite has no generative benchmarks")
        for b in self.generative:
            if self.generative_limit is not None:
                b.limit = min(b.limit or self.generative_limit, self.generative_limit)
            if self.generative_max_new_tokens is not None:
                b.max_new_tokens = min(b.max_new_tokens, self.generative_max_new_tokens)
            if self.benchmark_dir is not None:
                b.path = _benchmark_file(self.benchmark_dir, b.name)


def _suite_benchmarks(names: list[str]) -> list[BenchmarkConfig]:
    """The generative benchmarks of the eval options ``names`` (conf/eval/<name>.yaml, or an option on
    ``hydra.searchpath``: found as ``eval=<name>`` would be), in order."""
    out = []
    for name in names:
        content = option("eval", name)
        _check(content is not None, "eval.generative_from", name, "names of eval options (conf/eval/)")
        for entry in content.get("generative", []):
            out.append(BenchmarkConfig(**entry))
    return out


def _benchmark_file(directory: str, name: str) -> str:
    candidates = [os.path.join(os.path.expanduser(directory), name + ext) for ext in (".jsonl", ".json", ".parquet")]
    found = [c for c in candidates if os.path.isfile(c)]
    _check(bool(found), "eval.benchmark_dir", directory,
           f"a directory holding {name}.jsonl, {name}.json or {name}.parquet (benchmark {name!r})")
    return found[0]


@register
class Generative(Evaluator):
    """Generative benchmarks (``eval.generative``: SkyThought-style reasoning, medical multiple choice), sampled by
    ``generator.backend`` and graded by their kind (``forgetting.evaluate.benchmarks.BENCHMARK_KINDS``)."""

    name = "generative"
    Knobs = GenerativeKnobs
    runs_last = True
    metrics = (*LOSSES, Metric("*", True, None))
    needs_model = False  # with vLLM the engine loads its own copy; with hf, run() loads it if nothing else did

    def active(self, ev):
        return bool(self.knobs(ev).generative)

    def spec(self, ev):
        c = ev.c
        spec = {"benchmarks": [asdict(b) for b in self.knobs(ev).generative], "batch_size": c.eval.batch_size,
                "seed": c.seed}
        if BACKENDS[c.generator.backend].own_engine:  # sampled by another engine: other results
            spec["generator"] = {"backend": c.generator.backend, "dtype": c.generator.dtype or c.model.dtype}
        return spec

    def run(self, ev):

        c, backend, model = ev.c, None, ev.model
        if BACKENDS[c.generator.backend].own_engine:

            model = ev.model = None  # vLLM's engines load their own copy: give the GPU memory back first
            free_gpu_memory()
            backend = make_backend(c.generator.backend, *generation_model(c, ev.model_art), gen=c.generator)
        elif model is None:

            model = ev.model = load(c, ev.model_art)[0]
        try:
            gen = evaluate_generative(model, ev.tokenizer, self.knobs(ev).generative, ev.out, backend=backend,
                                      seed=c.seed, batch_size=c.eval.batch_size, per_example=ev.examples)
        finally:
            if backend is not None:
                backend.close()
        for group in ev.members:  # each benchmark's accuracy (paper Table 5)
            ev.members[group] += [k for k in gen if k.startswith(f"{group}/") and k.endswith("/acc")]
        return gen


def heldout_generator(c):
    """The generator settings of the held-out base samples: the run's (backend, lengths, batches), with the fixed
    seed and the base's own distribution, T = 1 and top-p = 1 (a KL on nucleus-truncated samples is not a KL)."""
    from dataclasses import replace

    return replace(c.generator, seed=HELDOUT_SAMPLES_SEED, temperature=1.0, top_p=1.0)


def heldout_starts(c) -> list:
    """The start tokens of the held-out samples: ``eval.base_samples_starts``, else ``method.starts``."""
    starts = knobs_of(BaseSamples, c.eval).base_samples_starts
    return list(starts if starts is not None else c.method.starts)


def base_samples_spec(c, base) -> dict:
    """The held-out base samples' sequence (a fixed seed, never a training seed's chunks)."""

    return context_free_spec(base, heldout_generator(c), c.model.dtype,
                             {"token": c.model.bos_token, "id": c.model.bos_token_id},
                             starts_spec(heldout_starts(c)))


def score_spec(c, base) -> dict:
    """The base's own losses on its held-out samples (a ``score`` artifact, one per base)."""
    return {"model": base, "samples": base_samples_spec(c, base), "n": knobs_of(BaseSamples, c.eval).base_samples,
            "batch_size": c.eval.batch_size, "dtype": c.model.dtype}


def base_samples(c, store, base) -> list[dict]:
    """Held-out context-free samples of the base model (cached like training samples)."""

    tokenizer = tokenizer_of(c, base)
    bos = bos_token_id(tokenizer, c.model.bos_token_id, c.model.bos_token)
    starts = heldout_starts(c)
    return sources.context_free(store, base, heldout_generator(c), knobs_of(BaseSamples, c.eval).base_samples,
                                bos_id=bos,
                                load=lambda: generation_model(c, base), model_dtype=c.model.dtype,
                                bos={"token": c.model.bos_token, "id": c.model.bos_token_id},
                                starts=resolve_starts(tokenizer, starts, bos), starts_spec=starts_spec(starts))


def losses(ev: Evaluation, metric: str, rows: list[dict], ids: list) -> dict[str, float]:
    """``{metric: the token-weighted loss of the encoded rows}``, their per-row losses recorded as its examples."""

    pairs = row_losses(ev.model, rows, ev.tokenizer.pad_token_id, ev.c.eval.batch_size)
    ev.examples[metric] = from_pairs(pairs, ids)
    return {metric: ratio(pairs)}


def corpora_spec(e) -> dict:
    """What the offline corpora of the eval config ``e`` are (``eval.corpora``, read by Corpora and Robustness)."""

    # the built-in corpora are this interpreter's standard library
    spec = {"names": e.corpora, "docs": e.corpus_docs, "max_len": e.corpus_max_len, "batch_size": e.batch_size,
            "python": python_version()}
    files = [n for n in e.corpora if is_corpus_file(n)]
    if files:  # an edited file is other text (absent without files: the keys made before it existed stay valid)
        spec["sha256"] = {n: input_sha256(Path(n).expanduser()) for n in files}
    return spec


def has_test_split(d) -> bool:
    """Whether the dataset declares a downstream test split (``dataset.test_path`` / ``test_split``)."""
    return d.test_path is not None or d.test_split is not None


def test_split_spec(c) -> dict:
    """What the test split's scores read (TestSplit's key, and Curve's on a dataset's test split): the rows
    themselves, so that an edited test file is a new evaluation."""
    d = c.dataset
    return {"name": d.name, "rows": held_out_spec(c, "test"), "format": d.format,
            "prompt": d.prompt_template if d.format == "plain" else None, "answer_pattern": d.answer_pattern,
            "max_seq_len": c.trainer.max_seq_len, "max_new_tokens": c.eval.max_gen_toks,
            "batch_size": c.eval.batch_size}


def test_split_rows(c) -> list[dict]:
    """The downstream test split (``dataset.test_path`` / ``test_split``), at most ``eval.limit`` rows; [] if none."""
    d = c.dataset
    if not has_test_split(d):
        return []

    return load_rows(d, test=True)[: c.eval.limit]


def held_out_spec(c, which: str) -> dict:
    """What the test split (``which="test"``) or the validation rows are read from — a local file by its content's
    digest (an edited file is a new evaluation), a hub split by its name — with the row mapping and ``eval.limit``:
    computed without reading a row, so that a plan (and its key) never loads a hub dataset."""

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

    return load_rows(c.dataset, validation=True)[: c.eval.limit]


def tree_digest(root: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file() and "__pycache__" not in p.parts:
            h.update(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()
