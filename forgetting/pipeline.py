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
from dataclasses import asdict
from functools import partial
from pathlib import Path

from forgetting.config import Adapter, Augment, Config, Merge, Optimizer, Regularizer
from forgetting.data.encode import encode_ids, encode_pair, encode_prompt, encode_text
from forgetting.data.jsonl import read_jsonl
from forgetting.models import bos_token_id, load_model, load_tokenizer, model_dir
from forgetting.store import Artifact, Store, atomic_write_text, key_of

log = logging.getLogger("forgetting")

OPTIMIZERS = {Optimizer.adamw: "adamw_torch", Optimizer.adamw8bit: "adamw_bnb_8bit"}  # HF Trainer names


# ---- stages ------------------------------------------------------------------------------------------------
def world_stage(c: Config, store: Store) -> Artifact:
    from forgetting.toy.world import build_world

    return store.build("world", asdict(c.world), lambda out: build_world(c.world, out))


def base_stage(c: Config, store: Store, world: Artifact | None) -> Artifact:
    """The model to fine-tune: the toy world's pretrained model, or a hub id / local directory."""
    if c.model.source == "hf":
        return Artifact("hub", f"{c.model.path}@{c.model.revision or 'main'}", Path(c.model.path))
    if c.model.source == "gguf":
        from forgetting.models import gguf_path, import_gguf
        from forgetting.store import file_sha256

        gguf = gguf_path(c.model.path)
        return store.build("import", {"gguf": gguf.name, "sha256": file_sha256(gguf)},
                           lambda out: import_gguf(gguf, out))
    from forgetting.toy.pretrain import pretrain

    spec = {"world": world, "arch": asdict(c.model.arch), "pretrain": asdict(c.model.pretrain),
            "seed": c.world.seed}
    return store.build("pretrain", spec, lambda out: pretrain(c.model, world.path, out,
                                                              store.work_dir("pretrain", spec), c.world.seed))


def generate_stage(c: Config, store: Store, base: Artifact, world: Artifact | None, down: list[dict],
                   n: int) -> list[dict]:
    """``n`` augmentation rows from the method's source (none for plain fine-tuning)."""
    from forgetting.generate import sources

    a = c.method.augment
    if a == Augment.none or n == 0:
        return []
    if a == Augment.replay:
        from forgetting.data.replay import load_replay_corpus

        texts = load_replay_corpus(c.replay, n, c.generator.seed, world.path if world is not None else None, store)
        return [{"text": t} for t in texts]
    tokenizer = tokenizer_of(c, base)
    if a == Augment.context_free:
        bos = bos_token_id(tokenizer, c.model.bos_token_id, c.model.bos_token)
        return sources.context_free(store, base, c.generator, n, bos_id=bos,
                                    load=lambda: generation_model(c, base))
    prompts = [prompt_ids(tokenizer, c, r["query"]) for r in down]
    key = key_of("prompts", {"dataset": dataset_spec(c.dataset), "world": world, **row_start(c)})
    return sources.contextual(store, base, c.generator, n, prompts=prompts, prompts_key=key,
                              load=lambda: generation_model(c, base))


def prompt_ids(tokenizer, c: Config, query: str) -> list[int]:
    """What the model is given to answer: the plain template (MetaMathQA) or the chat template (MedReason)."""
    if c.dataset.format == "chat":
        from forgetting.data.formats import chat_prompt_ids

        return chat_prompt_ids(tokenizer, query)
    return encode_prompt(tokenizer, c.dataset.prompt_template.format(query=query))


def encode_example(tokenizer, c: Config, query: str, response: str) -> dict:
    if c.dataset.format == "chat":
        from forgetting.data.formats import encode_chat

        return encode_chat(tokenizer, query, response, c.trainer.max_seq_len)
    return encode_pair(tokenizer, c.dataset.prompt_template.format(query=query), response, c.trainer.max_seq_len)


def train_stage(c: Config, store: Store, base: Artifact, world: Artifact | None) -> Artifact:
    from forgetting.data.datasets import load_downstream
    from forgetting.data.mix import n_augment, train_steps
    from forgetting.tracking import current
    from forgetting.train.trainer import train

    t, m = c.trainer, c.method
    down = load_downstream(c.dataset, world)
    n_aug = n_augment(len(down), m.ratio) if m.augment != Augment.none else 0
    steps = train_steps(len(down), t.epochs, t.batch_size * t.grad_accum * t.num_processes, t.max_steps)
    augment = generate_stage(c, store, base, world, down, n_aug)
    current().samples(augment, m.augment.value, lambda: tokenizer_of(c, base))  # logger=wandb: a samples table
    # the method's name, label and post-hoc merge do not change training: presets that differ only there
    # (and every point of a Wise-FT alpha grid) share one fine-tuned model
    knobs = {k: v for k, v in asdict(m).items() if k not in ("name", "label", "merge", "alpha")}
    if m.adapter == Adapter.lora:
        knobs["lora_init"] = "seeded"  # adapters initialised from the run's seed: earlier LoRA models differ
    if m.regularizer == Regularizer.l2:
        knobs["l2_impl"] = "optimizer"  # ℓ2 moved from grad hooks into the optimizer step: earlier models differ
    spec = {"base": base, "dataset": dataset_spec(c.dataset), "method": knobs, "trainer": trainer_spec(t),
            "seed": c.seed, "generator": {k: getattr(c.generator, k) for k in generator_knobs(m.augment)},
            "steps": steps, "replay": replay_spec(c) if m.augment == Augment.replay else None, **row_start(c)}
    if train_dtype(c) != c.model.dtype:  # earlier versions trained these in model.dtype (pure bf16): not reusable
        spec["master_weights"] = train_dtype(c)

    def make(out: Path) -> None:
        tokenizer = tokenizer_of(c, base)
        rows = [encode_example(tokenizer, c, r["query"], r["response"]) for r in down]
        check_answers_fit(c, rows)
        for r in augment:
            rows.append(encode_text(tokenizer, r["text"], t.max_seq_len, m.weight) if "text" in r
                        else encode_ids(r["ids"], t.max_seq_len, m.weight, r["n_prompt"]))
        log.info("train: %d downstream + %d %s rows, %d steps", len(down), len(augment), m.augment.value, steps)
        # a function, not a model: under ZeRO-3 each training process creates its own, already partitioned
        train(partial(trainable_model, c, base), tokenizer, rows, out, store.work_dir("train", spec), steps=steps,
              lr=t.lr,
              batch_size=t.batch_size, grad_accum=t.grad_accum, warmup_ratio=t.warmup_ratio,
              scheduler=t.scheduler, weight_decay=t.weight_decay, save_steps=t.save_steps,
              logging_steps=t.logging_steps, seed=c.seed, bf16=t.bf16, use_cpu=c.device == "cpu",
              optim=OPTIMIZERS[m.optimizer],
              l2_lambda=m.l2_lambda if m.regularizer == Regularizer.l2 else 0.0,
              gradient_checkpointing=t.gradient_checkpointing, packing=t.packing,
              report_to=current().report_to, deepspeed=t.deepspeed, num_processes=t.num_processes,
              save_dtype=c.model.dtype)

    return store.build("train", spec, make)


def check_answers_fit(c: Config, rows: list[dict], what: str = "downstream rows") -> None:
    """Encoded rows whose prompt fills ``trainer.max_seq_len`` have no answer token to learn or score: refused when
    that is every row, a warning otherwise (``launch.py`` checks the shortest and longest prompts before any stage,
    where the tokenizer loads)."""
    from forgetting.config import ConfigError
    from forgetting.data.encode import IGNORE

    empty = sum(all(label == IGNORE for label in r["labels"]) for r in rows)
    if empty == len(rows):
        raise ConfigError(f"trainer.max_seq_len={c.trainer.max_seq_len} is invalid: expected room for an answer "
                          f"token after the prompt: none of the {len(rows)} {what} has one")
    if empty:
        log.warning("%d of %d %s have no answer token within trainer.max_seq_len=%d (their prompts fill it): they "
                    "add nothing", empty, len(rows), what, c.trainer.max_seq_len)


# dataset knobs that only the evaluation reads (the test split): they never change what is trained or generated
_DATASET_TEST = ("test_path", "test_split", "answer_pattern")


def dataset_spec(d) -> dict:
    return {k: v for k, v in asdict(d).items() if k not in _DATASET_TEST}


def replay_spec(c: Config) -> dict:
    spec = asdict(c.replay)
    if c.replay.source != "toy":  # earlier versions took the first rows of a shuffle buffer: other rows, other models
        spec["sample"] = "uniform"
    return spec


def row_start(c: Config) -> dict:
    """Rows and prompts start as the tokenizer starts a text (``encode.start_ids``), no longer with a forced
    BOS: the same tokens for the toy tokenizer, which adds its BOS itself, so only other models' keys change
    (their stored samples, models and held-out losses were made from rows that began with a forced BOS)."""
    return {} if c.model.source == "toy" else {"row_start": "tokenizer"}


# trainer knobs added after models were stored: at these values training is what it was before they existed, so
# they stay out of the key and stored models remain valid
_TRAINER_DEFAULTS = {"packing": False, "num_processes": 1, "deepspeed": None}


def trainer_spec(t) -> dict:
    return {k: v for k, v in asdict(t).items() if k not in _TRAINER_DEFAULTS or v != _TRAINER_DEFAULTS[k]}


def generator_knobs(augment: Augment) -> tuple[str, ...]:
    """The generator settings an augmentation source reads (so other settings neither retrain nor relabel)."""
    sampling = ("backend", "top_p", "max_new_tokens", "batch_size", "chunk", "seed")
    return {Augment.none: (), Augment.replay: ("seed",), Augment.context_free: ("temperature", *sampling),
            Augment.contextual: ("contextual_temperature", *sampling)}[augment]


def with_lora(model, rank: int, alpha: float | None):
    from peft import LoraConfig, get_peft_model

    # alpha = rank unless set (paper Appendix E.1); every linear layer of the blocks, as in Biderman et al.
    config = LoraConfig(r=rank, lora_alpha=alpha if alpha is not None else rank, target_modules="all-linear",
                        lora_dropout=0.0, task_type="CAUSAL_LM")
    return get_peft_model(model, config)


def train_dtype(c: Config) -> str:
    """The dtype the train stage loads the base model in. Full fine-tuning outside DeepSpeed keeps fp32 master
    weights whatever ``model.dtype`` is: at lr 5e-6 an Adam step is far below half a bf16 ulp of most weights, so
    pure bf16 training rounds most updates away; ``trainer.bf16`` then means bf16 autocast compute. DeepSpeed's bf16
    mode keeps its own fp32 masters, and LoRA's base weights are frozen (peft keeps the adapters in fp32): both
    load in ``model.dtype``. The fine-tuned checkpoint is saved in ``model.dtype`` in every case."""
    if c.trainer.deepspeed is not None or c.method.adapter == Adapter.lora:
        return c.model.dtype
    return "float32"


def trainable_model(c: Config, base: Artifact):
    """The model the train stage fine-tunes: the base model in :func:`train_dtype`, with LoRA adapters when the
    method says so."""
    model, _ = load(c, base, train_dtype(c))
    m = c.method
    if m.adapter != Adapter.lora:
        return model
    import torch

    torch.manual_seed(c.seed)  # the adapters' random init follows the run's seed, not what ran before in the process
    return with_lora(model, m.lora_rank, m.lora_alpha)


def merge_stage(c: Config, store: Store, base: Artifact, tuned: Artifact) -> Artifact:
    """The post-hoc merge of the fine-tuned weights with the base's, read from the store, a local directory or
    the local hub cache (only when the merge is not stored yet)."""
    from forgetting.merge.wise_ft import wise_ft

    spec = {"base": base, "tuned": tuned, "merge": c.method.merge.value, "alpha": c.method.alpha}

    def make(out: Path) -> None:
        base_dir = model_dir(c.model.path, c.model.revision) if base.stage == "hub" else base.path
        wise_ft(base_dir, tuned.path, out, c.method.alpha)

    return store.build("merge", spec, make)


# the generation seed of the held-out base samples behind pre/base_samples/kl: fixed, so that every run (any seed,
# any method) is scored on the same samples, and never a training seed's chunks
HELDOUT_SAMPLES_SEED = 999_983


def base_samples(c: Config, store: Store, base: Artifact) -> list[dict]:
    """Held-out context-free samples of the base model (cached like training samples)."""
    from dataclasses import replace

    from forgetting.generate import sources

    gen = replace(c.generator, seed=HELDOUT_SAMPLES_SEED)
    bos = bos_token_id(tokenizer_of(c, base), c.model.bos_token_id, c.model.bos_token)
    return sources.context_free(store, base, gen, c.eval.base_samples, bos_id=bos,
                                load=lambda: generation_model(c, base))


def evaluate_stage(c: Config, store: Store, model_art: Artifact, world: Artifact | None,
                   base: Artifact | None = None) -> dict:
    from forgetting.evaluate.heldout import heldout_loss, rows_loss
    from forgetting.evaluate.lmeval import extract, run_lmeval, summarize, write_toy_tasks

    e = c.eval
    spec = {"model": model_art, "eval": eval_spec(e), "world": world, "prompt": c.dataset.prompt_template,
            **row_start(c)}
    if e.corpora:
        from forgetting.data.offline import corpus, python_version

        spec["python"] = python_version()  # the corpora are this interpreter's standard library
    samples = base_samples(c, store, base or model_art) if e.base_samples else []
    if samples:
        spec["base_samples"] = {"base": base or model_art, "seed": HELDOUT_SAMPLES_SEED}
    vllm = bool(e.generative) and c.generator.backend != "hf"
    if vllm:  # the benchmarks are sampled by another engine: other results (keys of hf runs stay as they were)
        spec["generator"] = {"backend": c.generator.backend, "dtype": c.generator.dtype or c.model.dtype}
    test = test_split_rows(c)
    if test:  # keyed by the rows themselves, so an edited test file is a new evaluation
        d = c.dataset
        spec["test"] = {"name": d.name, "rows": key_of("rows", {"rows": test}), "format": d.format,
                        "answer_pattern": d.answer_pattern, "max_seq_len": c.trainer.max_seq_len}

    def make(out: Path) -> None:
        if vllm:
            from forgetting.generate.vllm import require_vllm

            require_vllm()  # before any model is loaded
        needs_hf_model = (e.tasks or e.downstream or (e.heldout_loss and world is not None) or e.corpora or samples
                          or test or not vllm)
        model, tokenizer = load(c, model_art) if needs_hf_model else (None, tokenizer_of(c, model_art))
        metrics: dict[str, float] = {}
        if e.tasks or e.downstream:
            include = [write_toy_tasks(world.path, out / "tasks", c.dataset.prompt_template, e.max_gen_toks)] \
                if world is not None else []
            raw = run_lmeval(model, tokenizer, e.tasks + e.downstream, include_path=include + e.include_path,
                             num_fewshot=e.num_fewshot, fewshot=e.fewshot, limit=e.limit, batch_size=e.batch_size,
                             hflm_args=e.hflm, gen_kwargs=e.gen_kwargs)
            if e.tasks:
                metrics.update(summarize(raw, e.tasks, e.groups, e.metrics, "pre"))  # tasks, groups, the Avg.
            metrics.update(extract(raw, e.downstream, "down", e.metrics))
            (out / "lm_eval.json").write_text(json.dumps(raw["results"], indent=1, default=float))
        if test:
            from forgetting.evaluate.downstream import score_test_split

            examples = [encode_example(tokenizer, c, r["query"], r["response"]) for r in test]
            check_answers_fit(c, examples, "test rows")
            metrics.update(score_test_split(
                model, tokenizer, test, [prompt_ids(tokenizer, c, r["query"]) for r in test], examples,
                name=c.dataset.name, answer_pattern=c.dataset.answer_pattern, max_new_tokens=e.max_gen_toks,
                batch_size=e.batch_size, out_dir=out))
        if e.heldout_loss and world is not None:
            texts = [r["text"] for r in read_jsonl(world.path / "heldout.jsonl")]
            metrics["pre/heldout/loss"] = heldout_loss(model, tokenizer, texts, c.model.pretrain.seq_len)
        for name in e.corpora:
            texts = corpus(name, e.corpus_docs)
            metrics[f"pre/{name}/loss"] = heldout_loss(model, tokenizer, texts, e.corpus_max_len, e.batch_size)
        if samples:
            # KL(base ‖ model) = E_x~base[log p_base(x) − log p_model(x)] per token, on the base's own samples
            rows = [encode_ids(r["ids"], len(r["ids"])) for r in samples]
            ce_model = rows_loss(model, rows, tokenizer.pad_token_id, e.batch_size)
            ce_base = ce_model if model_art == (base or model_art) else \
                rows_loss(load(c, base)[0], rows, tokenizer.pad_token_id, e.batch_size)
            metrics["pre/base_samples/loss"] = ce_model
            metrics["pre/base_samples/kl"] = ce_model - ce_base
        if e.generative:
            from forgetting.evaluate.generative import evaluate_generative

            backend = None
            if vllm:
                model = None  # vLLM's engines load their own copy: give the GPU memory back first
                _free_gpu_memory()
                from forgetting.generate.sources import make_backend

                backend = make_backend(c.generator.backend, *generation_model(c, model_art), gen=c.generator)
            try:
                gen = evaluate_generative(model, tokenizer, e.generative, out, backend=backend, seed=c.seed,
                                          batch_size=e.batch_size)
            finally:
                if backend is not None:
                    backend.close()
            metrics.update(gen)
            for group in ("pre", "down"):  # the paper's Avg. columns of Table 5
                accs = [v for k, v in gen.items() if k.startswith(f"{group}/") and k.endswith("/acc")]
                if accs and f"{group}/avg" not in metrics:
                    metrics[f"{group}/avg"] = sum(accs) / len(accs)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=1))

    art = store.build("evaluate", spec, make)
    return json.loads((art.path / "metrics.json").read_text())


def test_split_rows(c: Config) -> list[dict]:
    """The downstream test split (``dataset.test_path`` / ``test_split``), at most ``eval.limit`` rows; [] if none."""
    d = c.dataset
    if d.test_path is None and d.test_split is None:
        return []
    from forgetting.data.formats import load_rows

    return load_rows(d, test=True)[: c.eval.limit]


# eval knobs that validation applies to the generative entries (EvalConfig.__post_init__): the key sees their
# effect there, and evaluations stored before they existed keep their keys
_EVAL_APPLIED = ("generative_limit", "generative_max_new_tokens", "benchmark_dir")
# eval knobs added after evaluations were stored: at these values evaluation is what it was before they existed
_EVAL_DEFAULTS = {"include_path": [], "gen_kwargs": {}, "corpora": [], "corpus_docs": 64, "corpus_max_len": 256,
                  "base_samples": 0}


def eval_spec(e) -> dict:
    """The evaluation settings, with each task directory of ``eval.include_path`` keyed by its contents too: an
    edited task YAML or data file is a new evaluation, not a stale cache hit."""
    spec = {k: v for k, v in asdict(e).items()
            if k not in _EVAL_APPLIED and (k not in _EVAL_DEFAULTS or v != _EVAL_DEFAULTS[k])}
    if e.include_path:
        spec["include_path"] = [{"path": p, "sha256": tree_digest(Path(p).expanduser())} for p in e.include_path]
    return spec


def tree_digest(root: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file() and "__pycache__" not in p.parts:
            h.update(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


# ---- helpers shared by the stages --------------------------------------------------------------------------
def _free_gpu_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def load(c: Config, art: Artifact, dtype: str | None = None):
    """(model, tokenizer) of an artifact, or of the hub model when ``art`` is the hub reference; the weights in
    ``dtype`` (default ``model.dtype``)."""
    hub = art.stage == "hub"
    path = c.model.path if hub else art.path
    revision = c.model.revision if hub else None
    model = load_model(path, dtype or c.model.dtype, c.model.trust_remote_code, revision)
    return (model.to(c.device) if c.device != "cpu" else model), tokenizer_of(c, art)


def generation_model(c: Config, art: Artifact):
    """What ``generator.backend`` samples from, with the tokenizer: the loaded model for hf; for vllm only where the
    weights are (a ``VLLMModel``), since vLLM loads them itself, in its own processes and GPUs."""
    if c.generator.backend == "hf":
        return load(c, art)
    from forgetting.generate.vllm import VLLMModel

    hub = art.stage == "hub"
    model = VLLMModel(path=str(c.model.path if hub else art.path), revision=c.model.revision if hub else None,
                      trust_remote_code=c.model.trust_remote_code, dtype=c.generator.dtype or c.model.dtype)
    return model, tokenizer_of(c, art)


def tokenizer_of(c: Config, art: Artifact):
    if art.stage == "hub":
        return load_tokenizer(c.model.path, c.model.trust_remote_code, c.model.revision)
    return load_tokenizer(art.path)


def label_of(c: Config, overrides: list[str] = ()) -> str:
    """The report row: ``label=`` if set, else the method's label plus the overrides that change this run
    (e.g. ``CFS (temperature=0.6)``); a temperature sweep leaves FT's label alone, since FT samples nothing."""
    if c.label:
        return c.label
    extra = [f"{key.split('.')[-1]}={value}" for key, value in
             (o.lstrip("+~").split("=", 1) for o in overrides if "=" in o) if _changes_run(c, key)]
    name = c.method.label or c.method.name
    return f"{name} ({', '.join(extra)})" if extra else name


def _changes_run(c: Config, key: str) -> bool:
    m = c.method
    group, _, knob = key.partition(".")
    if group in ("model", "dataset"):
        return True
    if group == "trainer":
        return m.train
    if group == "generator":
        return m.train and knob in generator_knobs(m.augment)
    if group != "method" or knob in ("", "name", "label", "train"):
        return False
    relevant = {"ratio": m.augment != Augment.none, "weight": m.augment != Augment.none,
                "lora_rank": m.adapter == Adapter.lora, "lora_alpha": m.adapter == Adapter.lora,
                "l2_lambda": m.regularizer == Regularizer.l2, "alpha": m.merge == Merge.wise_ft}
    return m.train and relevant.get(knob, True)


def run(c: Config, run_dir: Path | None = None, overrides: list[str] | None = None) -> dict:
    """Run every stage the config asks for and write ``results.json`` (and the training curves,
    ``train_log.jsonl``) into ``run_dir``; with ``logger=wandb`` the run is also tracked (forgetting/tracking.py)."""
    import shutil

    from forgetting import tracking

    started = time.time()
    overrides = list(overrides or [])
    tracker = tracking.start(c, label_of(c, overrides), overrides)
    try:
        store = Store(c.store_dir)
        world = world_stage(c, store) if c.needs_world() else None
        base = base_stage(c, store, world)
        tuned = train_stage(c, store, base, world) if c.method.train else None
        model = tuned or base
        if c.method.merge == Merge.wise_ft:
            model = merge_stage(c, store, base, model)
        metrics = evaluate_stage(c, store, model, world, base)
    except BaseException:
        tracker.finish(failed=True)
        raise
    result = {"label": label_of(c, overrides), "method": c.method.name, "seed": c.seed,
              "overrides": overrides, "metrics": metrics,
              "artifacts": {"base": base.key, "model": model.key,
                            "used": store.used},  # every stored artifact this run read or built (store gc keeps them)
              "seconds": round(time.time() - started, 1)}
    curves = tuned.path / "train_log.jsonl" if tuned is not None else None
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "results.json", json.dumps(result, indent=1))
        if curves is not None and curves.exists():
            shutil.copyfile(curves, run_dir / "train_log.jsonl")
    tracker.finish(metrics, train_log=curves)
    return result
