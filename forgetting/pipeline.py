"""The pipeline: world → base model → generate → train → evaluate, each stage a plain function.

    python launch.py method=cfs debug=micro

Stages hand off through the artifact store (``forgetting.store``), never through globals: each reads its
inputs as artifacts and returns its own, keyed by the config slice it depends on. Rerunning a finished
config recomputes nothing; rerunning a crashed one redoes only what is missing.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, fields
from functools import partial
from pathlib import Path
from types import SimpleNamespace

from forgetting import tracking
from forgetting.compose import Config
from forgetting.config import ADAM_BETA2
from forgetting.data.encode import encode_ids, encode_text
from forgetting.data.mix import n_augment, train_steps
from forgetting.evaluate.average import average
from forgetting.evaluate.evaluators import Evaluation, active
from forgetting.generate.backends import BACKENDS
from forgetting.models import gguf_path, import_gguf, model_dir
from forgetting.parts import DEFAULT_PART
from forgetting.runtime import Inputs, check_answers_fit, encode_example, load, tokenizer_of, train_dtype
from forgetting.store import Artifact, Store, atomic_write_text, input_sha256
from forgetting.toy.world import MIX, build_world
from forgetting.tracking import current
from forgetting.train.pretrain import chain, midtrain_segment, run_segment
from forgetting.train.trainer import train

log = logging.getLogger("forgetting")

# Bumped when a stage's code makes something else from the same inputs, so that stored artifacts are not reused.
TRAIN_VERSION = 1  # 1: keys derived from what the stage reads (method parts, data, sample sequences)
MERGE_VERSION = 1


# ---- what each stage reads: its key ------------------------------------------------------------------------
def world_spec(c: Config) -> dict:
    return {k: v for k, v in asdict(c.world).items() if k != "name"}  # the option's name builds nothing


def base_chain(c: Config, world: Artifact | None) -> list[tuple[str, dict]]:
    """(stage, spec) of each stored step that makes the model to fine-tune: the toy base's pretraining segments or a
    GGUF import (a hub model is read in place: no step), then the continued pretraining ``model.midtrain``, if any."""
    if c.model.source == "gguf":

        gguf = gguf_path(c.model.path)
        steps = [("import", {"gguf": gguf.name, "sha256": input_sha256(gguf)})]
    elif c.model.source == "toy":

        steps = chain(c.model, world, pretrain_seed(c))
    else:
        steps = []
    m = c.model.midtrain
    if m.steps > 0:

        parent = list(steps[-1]) if steps else {"hub": c.model.path, "revision": c.model.revision}
        corpus = {"world": world} if m.corpus == "world" else {"path": m.corpus, "limit": m.corpus_limit,
                                                              "sha256": input_sha256(m.corpus)}
        if m.mix:

            corpus["mix"] = dict(zip(MIX, map(float, m.mix)))
        steps.append(("continue", {"parent": parent, "corpus": corpus,
                                   "segment": midtrain_segment(m, pretrain_seed(c) if m.seed is None else m.seed),
                                   "dtype": c.model.dtype}))
    return steps


def base_spec(c: Config, world: Artifact | None) -> tuple[str, dict]:
    """(stage, spec) of the stored model to fine-tune (not for a hub model read in place, which is not stored)."""
    return base_chain(c, world)[-1]


def pretrain_seed(c: Config) -> int:
    """The toy base's init and data-order seed (``model.pretrain.seed``, default world.seed; plus the run's seed when
    ``model.pretrain.per_run_seed``)."""
    p = c.model.pretrain
    return (c.world.seed if p.seed is None else p.seed) + (c.seed if p.per_run_seed else 0)


def train_spec(c: Config, inputs: Inputs) -> dict:
    """The train key, from what training reads: the base model, the downstream data, the active parts (the
    augmentation's with its rows' source), the trainer config, the seed and the saved dtype. The method's name and
    label, its inactive parts' knobs and its merge do not train anything: presets that differ only there (every
    point of a Wise-FT alpha grid, FT in a ratio sweep) share one fine-tuned model."""
    parts = c.method.parts()
    return {"version": TRAIN_VERSION, "base": inputs.base, "init": parts["init"].spec_with(inputs),
            "data": inputs.data_spec(),
            "augment": parts["augment"].spec_with(inputs),
            **{kind: parts[kind].spec_with(inputs) for kind in ("adapter", "regularizer", "optimizer")},
            "trainer": trainer_spec(c.trainer), "seed": c.seed, "dtype": c.model.dtype}


def trainer_spec(t) -> dict:
    """The trainer settings that shape the model: not the option's name, not the checkpoint period (a resumed run
    ends where an uninterrupted one does), not ``epochs`` when ``max_steps`` sets the step count."""
    skip = ({"name", "save_steps", "step_cap"} | ({"epochs"} if t.max_steps is not None else set())
            | ({"adam_beta2"} if t.adam_beta2 == ADAM_BETA2 else set())  # keys made before it existed stay valid
            | ({"scheduler_kwargs"} if not t.scheduler_kwargs else set()))
    spec = {k: v for k, v in asdict(t).items() if k not in skip}
    spec["deepspeed"] = t.deepspeed or None  # {} and null both mean none: the keys made when null was the default
    return spec


def merge_spec(c: Config, base: Artifact, tuned: Artifact) -> dict:
    return {"version": MERGE_VERSION, "base": base, "tuned": tuned, "merge": c.method.parts()["merge"].spec()}


def stages(c: Config, store: Store, build: bool) -> dict[str, Artifact | None]:
    """The run's stage graph, walked once: ``build=False`` plans each artifact from its spec (nothing is built or
    loaded: :func:`plan`, ``--plan``), ``build=True`` builds or reuses it (:func:`run`). The same decisions in both:
    the world if the run needs it, the base (its pretraining chain, or the hub model), the fine-tune (or, for an
    init part that does not train, the model it starts from, e.g. recycling only), the merge of whichever model
    that is, the evaluation of the last."""
    if c.needs_world():
        world = world_stage(c, store) if build else store.planned("world", world_spec(c))
    else:
        world = None
    if build:
        base = base_stage(c, store, world)
    else:
        chain = base_chain(c, world)
        base = store.planned(*chain[-1]) if chain else hub_artifact(c)
    inputs, init = inputs_of(c, store, base, world), c.method.parts()["init"]
    tuned = None
    if c.method.train and init.trains():
        tuned = train_stage(c, store, base, world) if build else store.planned("train", train_spec(c, inputs))
    elif c.method.train:  # the starting model is the run's model (e.g. recycling only)
        if build:
            tuned = init.start(inputs)
        else:
            source = init.source_spec(inputs)
            tuned = store.planned(init.stage, source) if source is not None else base
    merged = None
    if tuned is not None and tuned != base and c.method.merge != "none":
        merged = merge_stage(c, store, base, tuned) if build else store.planned("merge", merge_spec(c, base, tuned))
    model = merged or tuned or base
    evaluated = evaluation(c, store, model, world, base) if build else \
        store.planned("evaluate", evaluate_spec(c, model, world, base))
    return {"world": world, "base": base, "train": tuned, "merge": merged, "model": model, "evaluate": evaluated}


def plan(c: Config) -> dict[str, str | None]:
    """The keys of the artifacts a run would read or make, computed without building or loading anything:
    ``world``, ``base``, ``train``, ``merge`` and ``evaluate`` (None where the run has no such stage)."""
    planned = stages(c, Store(c.store_dir), build=False)
    return {k: planned[k] and planned[k].key for k in ("world", "base", "train", "merge", "evaluate")}


# ---- stages ------------------------------------------------------------------------------------------------
def world_stage(c: Config, store: Store) -> Artifact:

    return store.build("world", world_spec(c), lambda out: build_world(c.world, out))


def hub_artifact(c: Config) -> Artifact:
    return Artifact("hub", f"{c.model.path}@{c.model.revision or 'main'}", Path(c.model.path))


def base_stage(c: Config, store: Store, world: Artifact | None) -> Artifact:
    """The model to fine-tune: the toy world's pretrained model, a GGUF file's weights, or a hub id / local
    directory (read in place); then its continued pretraining (``model.midtrain``), if any."""

    parent = hub_artifact(c) if c.model.source == "hf" else None
    for stage, spec in base_chain(c, world):
        if stage == "import":

            def make(out):
                import_gguf(gguf_path(c.model.path), out)
        else:
            def make(out, stage=stage, spec=spec, parent=parent):
                run_segment(c, world, spec, out, store.work_dir(stage, spec), parent)

        parent = store.build(stage, spec, make)
    return parent


def generate_stage(c: Config, store: Store, base: Artifact, world: Artifact | None, down: list[dict],
                   n: int) -> list[dict]:
    """``n`` rows of the method's augmentation part for the downstream rows ``down`` (none for plain FT); model
    samples are stored chunk by chunk (``forgetting.generate.sources``)."""
    inputs = inputs_of(c, store, base, world)
    inputs._down = down
    return c.method.parts()["augment"].rows(inputs, n) if n > 0 else []


def train_stage(c: Config, store: Store, base: Artifact, world: Artifact | None) -> Artifact:
    """Fine-tune the base model on the downstream rows and the method's augmentation rows (generated first, each
    chunk its own artifact), with the method's adapter and trainer hooks."""

    t, parts = c.trainer, c.method.parts()
    inputs = inputs_of(c, store, base, world)
    spec = train_spec(c, inputs)
    down = inputs.downstream()
    augment = parts["augment"]
    rows_aug = generate_stage(c, store, base, world, down, n_augment(len(down), c.method.ratio))
    current().samples(rows_aug, augment.name, inputs.tokenizer)  # logger=wandb: a samples table
    steps = train_steps(len(down), t.epochs, t.batch_size * t.grad_accum * t.num_processes, t.max_steps)

    def make(out: Path) -> None:
        start = parts["init"].start(inputs)  # the base, or e.g. a recycled model built from it
        for part in (parts["optimizer"], parts["regularizer"]):
            part.prepare(inputs)
        tokenizer = inputs.tokenizer()
        rows = [encode_example(tokenizer, c, r["query"], r["response"]) for r in down]
        check_answers_fit(c, rows)
        weight = c.method.weight
        for r in rows_aug:
            rows.append(encode_text(tokenizer, r["text"], t.max_seq_len, weight) if "text" in r
                        else encode_ids(r["ids"], t.max_seq_len, weight, r["n_prompt"]))
        log.info("train: %d downstream + %d %s rows, %d steps", len(down), len(rows_aug), augment.name, steps)
        # a function, not a model: under ZeRO-3 each training process creates its own, already partitioned
        train(partial(trainable_model, c, start), tokenizer, rows, out, store.work_dir("train", spec), t,
              steps=steps, seed=c.seed, hooks=[parts["optimizer"], parts["regularizer"]],
              use_cpu=c.device == "cpu", report_to=current().report_to, save_dtype=c.model.dtype)

    return store.build("train", spec, make)


def trainable_model(c: Config, base: Artifact):
    """The model the train stage fine-tunes: the base model in :func:`train_dtype`, wrapped by the method's
    adapter."""
    model, _ = load(c, base, train_dtype(c))
    return c.method.parts()["adapter"].wrap(model, c.seed)


def merge_stage(c: Config, store: Store, base: Artifact, tuned: Artifact) -> Artifact:
    """The method's post-hoc merge of the fine-tuned weights with the base's, read from the store, a local
    directory or the local hub cache (only when the merge is not stored yet)."""
    def make(out: Path) -> None:
        base_dir = model_dir(c.model.path, c.model.revision) if base.stage == "hub" else base.path
        c.method.parts()["merge"].merge(base_dir, tuned.path, out)

    return store.build("merge", merge_spec(c, base, tuned), make)


# 1: keys from what the active evaluators read (forgetting/evaluate/evaluators.py); 2: per-example values
# (examples.json) beside the metrics
EVALUATE_VERSION = 2


def evaluate_spec(c: Config, model_art: Artifact, world: Artifact | None, base: Artifact | None = None) -> dict:
    """The evaluate key: the model (in ``model.dtype``) and what each active evaluator reads."""

    ev = Evaluation(c, None, model_art, world, base)
    return {"version": EVALUATE_VERSION, "model": model_art, "dtype": c.model.dtype,
            **{x.name: x.spec(ev) for x in active(ev)}}


def evaluate_stage(c: Config, store: Store, model_art: Artifact, world: Artifact | None,
                   base: Artifact | None = None) -> dict:
    """The metrics of :func:`evaluation`."""
    return json.loads((evaluation(c, store, model_art, world, base).path / "metrics.json").read_text())


def examples_of(evaluated: Artifact) -> dict:
    """The per-example values behind an evaluation's metrics (``forgetting.evaluate.examples``)."""
    path = evaluated.path / "examples.json"
    return json.loads(path.read_text()) if path.exists() else {}


def evaluation(c: Config, store: Store, model_art: Artifact, world: Artifact | None,
               base: Artifact | None = None) -> Artifact:
    """Run the active evaluators (``forgetting.evaluate.evaluators``) on the model, loaded once; the Avg. columns
    over all of them (``forgetting.evaluate.average``); the metrics in ``metrics.json`` and their per-example values
    in ``examples.json``."""

    def make(out: Path) -> None:
        ev = Evaluation(c, store, model_art, world, base, out)
        evaluators = active(ev)
        if any(x.name == "generative" for x in evaluators):
            BACKENDS[c.generator.backend].require()  # before any model is loaded
        if any(x.needs_model for x in evaluators):
            ev.model, ev.tokenizer = load(c, model_art)
        else:
            ev.tokenizer = tokenizer_of(c, model_art)
        metrics: dict[str, float] = {}
        info: dict[str, dict] = {}
        for evaluator in evaluators:
            produced = evaluator.run(ev)
            metrics.update(produced)
            info.update({m: evaluator.describe(m, ev) for m in produced})
        averages = average(metrics, ev.members)
        metrics.update(averages)
        info.update({m: {"evaluator": "average", "higher_is_better": True, "averaged": False} for m in averages})
        (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
        (out / "metric_info.json").write_text(json.dumps(info, indent=1))  # the report's directions
        (out / "examples.json").write_text(json.dumps(ev.examples))

    return store.build("evaluate", evaluate_spec(c, model_art, world, base), make)


def inputs_of(c: Config, store: Store, base: Artifact, world: Artifact | None) -> Inputs:
    """The train stage's inputs, with the stages a part may build for another config (``Inputs.stages``)."""
    return Inputs(c, store, base, world, STAGES)


# what parts reach of the pipeline (forgetting.runtime.Inputs.stages): the stage graph's pieces, never the module
STAGES = SimpleNamespace(base_chain=base_chain, hub_artifact=hub_artifact, train_spec=train_spec,
                         base_stage=base_stage, train_stage=train_stage, inputs=inputs_of)


# dataset knobs a label names on their own; every other dataset override (the option, its files, fields, templates,
# answer pattern) says which data it is, and the label says that once, by the dataset's name
_DATASET_KNOBS = ("limit", "format", "validation_rows")


def label_of(c: Config, overrides: list[str] = ()) -> str:
    """The report row: ``label=`` if set, else the method's label plus the overrides that change this run
    (e.g. ``CFS (temperature=0.6)``); a temperature sweep leaves FT's label alone, since FT samples nothing. The
    data is named once, by :func:`dataset_name` (``Base (dataset=dates, limit=640)``), not by its files and fields:
    the full overrides are in results.json."""
    if c.label:
        return c.label
    extra = []
    for key, value in (o.lstrip("+~").split("=", 1) for o in overrides if "=" in o):
        if not _changes_run(c, key):
            continue
        group, _, knob = key.partition(".")
        item = f"dataset={dataset_name(c)}" if group == "dataset" and knob not in _DATASET_KNOBS else \
            f"{key.split('.')[-1]}={value}"
        if item not in extra:
            extra.append(item)
    name = c.method.label or c.method.name
    return f"{name} ({', '.join(extra)})" if extra else name


def dataset_name(c: Config) -> str:
    """``dataset.name``; for a bring-your-own file left with its option's generic name (``jsonl``), the file's name."""
    d = c.dataset
    generic = d.name == d.source and d.path
    return Path(d.path).name if generic else d.name


def base_label_of(overrides: list[str] = ()) -> str:
    """The base model's part of a run's overrides (``pretrain=sam``, ``version=v2``, ``model.…``), for reports that
    compare bases; "default" when none."""
    mine = [o.lstrip("+~") for o in overrides if "=" in o and o.lstrip("+~").split("=", 1)[0].split(".")[0]
            in ("model", "pretrain", "version")]
    return ", ".join(mine) or "default"


def _changes_run(c: Config, key: str) -> bool:
    """Whether the config leaf ``key`` is read by this run's model: the model and data always; with training, the
    trainer, the parts the method picks and their knobs, and the generator or replay settings in the
    augmentation's source spec (whose keys are the config's leaf names)."""
    m = c.method
    group, _, knob = key.partition(".")
    if group in ("model", "dataset", "pretrain", "version"):  # option groups of model.pretrain and model
        return True
    if not m.train or group not in ("trainer", "method", "generator", "replay"):
        return False
    if group == "trainer":
        return True
    parts = m.parts()
    if group == "method":
        # a knob of an active part (its spec may leave out knobs that act through its source, e.g. recycle_from)
        return knob in DEFAULT_PART or any(knob in part.spec() or knob in {f.name for f in fields(part.Knobs)}
                                    for part in parts.values())
    placeholder = Artifact("hub", "", Path("."))  # the spec's names, not its values, are what matters here
    source = parts["augment"].source_spec(inputs_of(c, Store(c.store_dir), placeholder, None)) or {}
    return knob in source.get(group if group == "replay" else "generator", source)


def run(c: Config, run_dir: Path | None = None, overrides: list[str] | None = None) -> dict:
    """Run every stage the config asks for and write ``results.json`` (and the training curves,
    ``train_log.jsonl``) into ``run_dir``; with ``logger=wandb`` the run is also tracked (forgetting/tracking.py)."""
    import shutil


    started = time.time()
    overrides = list(overrides or [])
    tracker = tracking.start(c, label_of(c, overrides), overrides)
    try:
        store = Store(c.store_dir)
        built = stages(c, store, build=True)
        base, model, evaluated = built["base"], built["model"], built["evaluate"]
        tuned = built["train"] if c.method.train and c.method.parts()["init"].trains() else None
        metrics = json.loads((evaluated.path / "metrics.json").read_text())
        declared = evaluated.path / "metric_info.json"  # absent from evaluations stored before it existed
        metric_info = json.loads(declared.read_text()) if declared.exists() else {}
    except BaseException:
        tracker.finish(failed=True)
        raise
    result = {"label": label_of(c, overrides), "method": c.method.name, "seed": c.seed,
              "base_label": base_label_of(overrides), "overrides": overrides, "metrics": metrics,
              "metric_info": metric_info,
              "artifacts": {"base": base.key, "model": model.key,
                            "used": store.used},  # every stored artifact this run read or built (store gc keeps them)
              "seconds": round(time.time() - started, 1),
              "examples": examples_of(evaluated)}  # per-example values: the report's intervals and pairing
    curves = tuned.path / "train_log.jsonl" if tuned is not None else None
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "results.json", json.dumps(result, indent=1))
        if curves is not None and curves.exists():
            shutil.copyfile(curves, run_dir / "train_log.jsonl")
    tracker.finish(metrics, train_log=curves)
    return result
