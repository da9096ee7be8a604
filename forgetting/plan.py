"""A plan before compute: every stage a run will build or reuse, with its key, and for each stage that trains,
generates or evaluates its peak memory per device, FLOPs and time (``forgetting.estimate``); and the same estimate
as the preflight check ``launch.py`` makes before a run starts, which refuses a stage that does not fit.

    python launch.py +experiment=llama3_recycle device=cuda method.recycle_train=true --plan
    python launch.py +experiment=olmo_table2 --plan plan.device=a100_80gb plan.mfu=0.35
    pytest tests/test_plan.py

Nothing is built, loaded or downloaded: the keys come from ``forgetting.pipeline``'s own spec functions (the same
ones the stages call), the architecture from a ``config.json`` already on disk (the local hub cache, a local model
directory, the store's GGUF import) or else from the model yaml's ``card`` (model.card.*, the model card's
numbers), and the step count from the data when it is local, else from ``dataset.n_rows``. A key that depends on a
file that is not there yet (a corpus, a data file) is shown as unknown, with the reason, as are the keys that
depend on it. docs/plan.md explains the output and the memory model.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from forgetting.compose import Config, validate
from forgetting.data.datasets import DATASET_SOURCES
from forgetting.data.mix import n_augment, train_steps
from forgetting.data.replay import REPLAY_SOURCES
from forgetting.errors import ConfigError
from forgetting.estimate import (
    DEVICES,
    DTYPE_BYTES,
    EVAL_CONTEXT,
    TOLERANCE,
    Arch,
    Device,
    Estimate,
    TrainSetup,
    duration,
    eval_memory,
    fisher_memory,
    fits,
    generate_flops,
    host_device,
    human,
    seconds,
    train_flops,
    train_memory,
)
from forgetting.evaluate.evaluators import Evaluation, active, base_samples_spec, heldout_generator, score_spec
from forgetting.generate.backends import BACKENDS
from forgetting.parts.ewc import _samples_part, fisher_spec
from forgetting.pipeline import (
    base_chain,
    evaluate_spec,
    hub_artifact,
    inputs_of,
    merge_spec,
    pretrain_seed,
    train_spec,
    world_spec,
)
from forgetting.presets import option
from forgetting.runtime import Inputs, train_dtype
from forgetting.store import Artifact, Store, key_of
from forgetting.train.pretrain import midtrain_segment

UNKNOWN = "?"


@dataclass
class Step:
    """One stage of the plan."""

    stage: str
    key: str | None  # None: unknown until an input exists (``why``)
    what: str
    stored: bool = False
    keys: list[str] = field(default_factory=list)  # every chunk's key (generate)
    chunks: int | None = 1  # None: unknown (the row count is)
    estimate: Estimate | None = None
    device: Device | None = None
    dtype: str = "float32"  # compute dtype (the device's peak)
    time: float | None = None
    fit: str = ""  # fits | tight | does not fit ("" for stages with no device estimate)
    fix: str | None = None  # overrides that make it fit, with their estimate
    why: str = ""  # why the key (or the step count) is unknown
    host: str = ""  # a host-RAM note for stages that run on the CPU (merges)

    @property
    def builds(self) -> bool:
        return not self.stored and self.stage not in ("hub",)


# ---- the architecture, without weights ----------------------------------------------------------------------
def arch_of(c: Config) -> Arch:
    """The model's architecture: the toy model's ``model.arch``; else a ``config.json`` on disk; else the model yaml's
    ``card``. Raises ConfigError when there is none of these."""
    m = c.model
    if m.source == "toy":
        a = m.arch
        return Arch(a.num_layers, a.hidden_size, a.num_heads, a.num_heads, a.intermediate_size, c.world.vocab_size,
                    tied=True, max_positions=a.max_position_embeddings, source="model.arch, world.vocab_size")
    found = _config_json(c)
    if found is not None:
        return _from_config_json(found)
    card = m.card
    needed = ("num_layers", "hidden_size", "num_heads", "intermediate_size", "vocab_size", "tied_embeddings")
    missing = [k for k in needed if getattr(card, k) is None]
    if missing:
        raise ConfigError(f"model.card.{missing[0]}=None is invalid: expected the architecture of {m.path!r} "
                          f"({', '.join('model.card.' + k for k in missing)}, from its model card), since no "
                          "config.json of it is on disk")
    return Arch(card.num_layers, card.hidden_size, card.num_heads, card.num_kv_heads or card.num_heads,
                card.intermediate_size, card.vocab_size, tied=bool(card.tied_embeddings),
                max_positions=card.max_position_embeddings, source=f"model.card (conf/model/{m.name}.yaml)")


def _config_json(c: Config) -> Path | None:
    """A config.json of the model already on disk, found without fetching anything."""
    m = c.model
    if m.source == "gguf":
        stage, spec = base_chain(dataclasses.replace(c, model=dataclasses.replace(m, midtrain=dataclasses.replace(
            m.midtrain, steps=0))), None)[0]
        path = Store(c.store_dir, create=False).path(stage, key_of(stage, spec)) / "config.json"
        return path if path.is_file() else None
    local = Path(m.path).expanduser()
    if local.is_dir():
        return local / "config.json" if (local / "config.json").is_file() else None
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(m.path, "config.json", revision=m.revision)
    except ValueError:  # not a valid repo id
        return None
    return Path(cached) if isinstance(cached, str) else None


def _from_config_json(path: Path) -> Arch:
    """A Llama-style config.json's numbers (Llama, OLMo, OLMo-2, SmolLM2, Qwen2 name them alike)."""
    cfg = json.loads(path.read_text())
    cfg = cfg.get("text_config", cfg)
    try:
        heads = cfg["num_attention_heads"]
        return Arch(cfg["num_hidden_layers"], cfg["hidden_size"], heads, cfg.get("num_key_value_heads") or heads,
                    cfg["intermediate_size"], cfg["vocab_size"], tied=bool(cfg.get("tie_word_embeddings", False)),
                    max_positions=cfg.get("max_position_embeddings"), source=str(path))
    except KeyError as err:
        raise ConfigError(f"{path} has no {err.args[0]!r}: expected a Llama-style config.json (the estimate's "
                          "blocks), or set model.card.*") from None


# ---- the device ---------------------------------------------------------------------------------------------
def plan_device(c: Config) -> tuple[Device, str]:
    """The device ``--plan`` estimates on, and why: ``plan.device`` if set; else what ``device=`` implies."""
    if c.plan.device == "cpu" or (c.plan.device is None and c.device == "cpu"):
        return host_device(), "device=cpu" if c.plan.device is None else "plan.device=cpu"
    if c.plan.device is not None:
        return DEVICES[c.plan.device], f"plan.device={c.plan.device}"
    real = visible_gpu()
    if real is not None:
        return real, "the GPU torch sees"
    return DEVICES["h100_80gb"], "device=cuda, no GPU visible here: plan.device=h100_80gb (set plan.device)"


def visible_gpu() -> Device | None:
    """The smallest GPU torch sees, by its total memory (what a process on it can get), or None."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    props = min((torch.cuda.get_device_properties(i) for i in range(torch.cuda.device_count())),
                key=lambda p: p.total_memory)
    named = next((d for d in DEVICES.values() if d.gpu and d.note.split()[0].lower() in props.name.lower()), None)
    peak = named.peak if named else DEVICES["h100_80gb"].peak
    return Device(props.name, props.total_memory, peak, note="the GPU torch sees")


def runtime_device(c: Config) -> Device:
    """The device a run here will use: the real one (preflight ignores plan.device)."""
    if c.device == "cpu":
        return host_device()
    return visible_gpu() or DEVICES["h100_80gb"]


# ---- stages ------------------------------------------------------------------------------------------------
class _Planner:
    """Walks the stages ``forgetting.pipeline.run`` would run, in its order, computing keys and estimates."""

    def __init__(self, c: Config, device: Device, mfu: float):
        self.c, self.device, self.mfu = c, device, mfu
        self.store = Store(c.store_dir, create=False)
        self.steps: list[Step] = []
        self.unknown = ""  # why the first unknown key is unknown (the keys made from it inherit the reason)
        self.count_rows = True

    # keys
    def artifact(self, stage: str, spec_fn) -> tuple[Artifact, str]:
        """The planned artifact of ``spec_fn()``; its key is UNKNOWN when the spec cannot be computed yet or names
        an unknown artifact. Returns (artifact, why unknown)."""
        try:
            spec = spec_fn()
        except (OSError, ConfigError, ValueError) as err:
            why = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            return Artifact(stage, UNKNOWN, Path()), why
        if _names_unknown(spec):
            return Artifact(stage, UNKNOWN, Path()), self.unknown
        return self.store.planned(stage, spec), ""

    def add(self, step: Step, art: Artifact | None = None, why: str = "") -> Step:
        if art is not None:
            step.key = None if art.key == UNKNOWN else art.key
            step.stored = step.key is not None and (art.path / "manifest.json").exists()
            if art.key == UNKNOWN:
                step.why = why or self.unknown
                self.unknown = self.unknown or step.why
        if not any(s.stage == step.stage and s.key == step.key and s.key is not None for s in self.steps):
            self.steps.append(step)
        return step

    # the run
    def run(self) -> list[Step]:
        c = self.c
        world = None
        if c.needs_world():
            world, why = self.artifact("world", lambda: world_spec(c))
            self.add(Step("world", None, f"the toy world (seed {c.world.seed}): corpus, tasks, tokenizer"), world, why)
        base = self.base(c, world)
        init = c.method.parts()["init"]
        model = base
        if c.method.train:
            model = self.trained(c, base, world)
            if init.trains() and c.method.merge != "none":
                merged, why = self.artifact("merge", lambda: merge_spec(c, base, model))
                self.add(Step("merge", None, f"{c.method.merge}: base and fine-tune merged on the CPU",
                              host=_merge_note(self.arch(c), c.model.dtype)), merged, why)
                model = merged
        self.evaluate(c, model, world, base)
        return self.steps

    def arch(self, c: Config) -> Arch | None:
        try:
            return arch_of(c)
        except ConfigError:  # nothing to estimate with (the header says why)
            return None

    def base(self, c: Config, world: Artifact | None) -> Artifact:
        try:
            chain = base_chain(c, world)
        except (OSError, ConfigError, ValueError) as err:  # e.g. a midtrain corpus not there yet
            chain, why = None, str(err).strip().splitlines()[0]
        if c.model.source == "hf":
            hub = hub_artifact(c)
            self.add(Step("hub", hub.key, _hub_what(c.model.path, c.model.revision), stored=True))
        if chain is None:  # the continued pretraining's key reads its corpus: estimated all the same

            m = c.model.midtrain
            chain = [("continue", {"segment": midtrain_segment(m, pretrain_seed(c) if m.seed is None else m.seed),
                                   "unknown": why})]
        if not chain:
            return hub_artifact(c)
        parent = None
        a = self.arch(c)
        for stage, spec in chain:
            if "unknown" in spec:
                art, why = Artifact(stage, UNKNOWN, Path()), spec["unknown"]
            else:
                art, why = self.store.planned(stage, spec), ""
            if _names_unknown(spec):
                art = Artifact(stage, UNKNOWN, Path())
            if stage == "import":
                step = Step("import", None, f"{spec['gguf']} dequantized to an fp32 checkpoint (on the CPU)",
                            host=f"host RAM ~{human(2 * 4 * a.params)} (two fp32 copies)" if a else "")
            else:
                seg = spec["segment"]
                procs = seg.get("num_processes", 1)
                what = ("pretraining" if stage == "pretrain" else "continued pretraining") + \
                    f", {seg['steps']} steps of {seg['batch_size'] * seg['grad_accum'] * procs} × {seg['seq_len']} " \
                    f"tokens" + (f" on {procs} devices" if procs > 1 else "") + \
                    (f", SAM ρ {seg['rho']}" if seg["rho"] > 0 else "")
                step = Step(stage, None, what)
                if a is not None:
                    setup = segment_setup(seg, self.device.gpu)
                    tokens = seg["steps"] * seg["batch_size"] * seg["grad_accum"] * setup.processes * seg["seq_len"]
                    self.train_estimate(step, a, setup, tokens, "bfloat16" if seg["bf16"] else "float32",
                                        devices=setup.processes, fix=(lambda seg=seg: _midtrain_fixes(
                                            seg, a, self.device)) if stage == "continue" and
                                        c.model.midtrain.steps > 0 else None)
            self.add(step, art, why)
            parent = art
        return parent

    def trained(self, c: Config, base: Artifact, world: Artifact | None) -> Artifact:
        """The stages ``train_stage`` (or a non-training init) runs: the augmentation's rows, the init's own
        stages (a recycled start), the regularizer's (EWC's Fisher), then the fine-tune. Returns the model."""
        parts = c.method.parts()
        init = parts["init"]
        inputs = inputs_of(c, self.store, base, world)
        a = self.arch(c)
        n_down, why_rows = downstream_rows(c, self.count_rows)
        if init.trains():
            self.augment(c, inputs, n_down, why_rows, a)
        if init.stage:  # the starting model is built from other models (paper 004's recycling)
            src, src_base, _ = init.source(inputs)
            if not init.knobs.recycle_tuned:
                if src_base.stage != "hub":
                    self.base(src, world)
                else:
                    self.add(Step("hub", src_base.key, _hub_what(src.model.path, src.model.revision), stored=True))
                self.trained(src, src_base, world)
            else:
                self.add(Step("hub", f"{init.knobs.recycle_tuned}@main",
                              _hub_what(init.knobs.recycle_tuned, None) + " (the source fine-tune)",
                              stored=True))
                if src_base.stage == "hub":
                    self.add(Step("hub", src_base.key, stored=True,
                                  what=_hub_what(src.model.path, src.model.revision) + " (the source base)"))
            start, why = self.artifact(init.stage, lambda: init.source_spec(inputs))
            self.add(Step(init.stage, None, "target + (source fine-tune − source base), streamed on the CPU",
                          host=_merge_note(a, c.model.dtype)), start, why)
            if not init.trains():
                return start
        if parts["regularizer"].name == "ewc":
            self.fisher(c, inputs, a)
        tuned, why = self.artifact("train", lambda: train_spec(c, inputs))
        step = Step("train", None, "")
        t = c.trainer
        eff = t.batch_size * t.grad_accum * t.num_processes
        steps = t.max_steps if t.max_steps is not None else (
            train_steps(n_down, t.epochs, eff) if n_down is not None else None)
        adapter = parts["adapter"]
        kind = f"LoRA r{c.method.lora_rank}" if adapter.name == "lora" else "full fine-tune"
        ds = _zero(t)
        step.what = (f"{kind} ({train_dtype(c)} weights{', ZeRO-' + str(ds[0]) if ds else ''}"
                     f"{', bf16 autocast' if t.bf16 and not ds else ''}), "
                     + (f"{steps} steps" if steps is not None else "? steps") + f" × {eff} rows × {t.max_seq_len}"
                     + (f" tokens on {t.num_processes} devices" if t.num_processes > 1 else " tokens"))
        if steps is None:
            step.why = why_rows
        if a is not None:
            tokens = steps * eff * t.max_seq_len if steps is not None else None
            self.train_estimate(step, a, train_setup(c, self.device.gpu), tokens,
                                "bfloat16" if t.bf16 else "float32", devices=t.num_processes,
                                fix=lambda: _train_fixes(c, a, self.device, step.estimate.flops, self.mfu))
        self.add(step, tuned, why)
        return tuned

    def augment(self, c: Config, inputs: Inputs, n_down: int | None, why_rows: str, a: Arch | None) -> None:
        part = c.method.parts()["augment"]
        if part.name == "none" or c.method.ratio <= 0:
            return
        n = n_augment(n_down, c.method.ratio) if n_down is not None else None
        if part.name == "replay":
            if REPLAY_SOURCES[c.replay.source].stored:
                art, why = self.artifact("replay", lambda: part.source_spec(inputs))
                self.add(Step("replay", None, f"{c.replay.max_rows} rows sampled from {c.replay.path} (one pass)"),
                         art, why)
            return
        prompt = 1 if part.name == "context_free" else c.trainer.max_seq_len
        self.generate(c, inputs.base, lambda: part.source_spec(inputs), n, why_rows, a, prompt,
                      f"{part.label} samples of the base")

    def generate(self, c: Config, base: Artifact, spec_fn, n: int | None, why_rows: str, a: Arch | None,
                 prompt: int, what: str, gen=None) -> None:
        gen = gen or c.generator
        first, why = self.artifact("generate", lambda: {**spec_fn(), "index": 0})
        chunks = math.ceil(n / gen.chunk) if n is not None else None
        step = Step("generate", None, "", chunks=chunks)
        if first.key != UNKNOWN and chunks:
            spec = spec_fn()
            step.keys = [key_of("generate", {**spec, "index": i}) for i in range(chunks)]
            done = sum((self.store.path("generate", k) / "manifest.json").exists() for k in step.keys)
        else:
            done = 0
        rows = f"{n} rows" if n is not None else "? rows"
        step.what = (f"{what}: {rows} in {chunks if chunks is not None else '?'} chunk{'' if chunks == 1 else 's'} "
                     f"of {gen.chunk} "
                     f"({gen.backend}, ≤ {gen.max_new_tokens} new tokens each)"
                     + (f", {done} stored" if 0 < done < (chunks or 0) else ""))
        if n is None:
            step.why = why_rows
        if a is not None and n != 0:
            self.generate_estimate(step, c, a, gen, prompt, n)
        art = first
        self.add(step, art, why)
        step.stored = bool(chunks) and done == chunks

    def fisher(self, c: Config, inputs: Inputs, a: Arch | None) -> None:

        k = c.method.parts()["regularizer"].knobs
        spec_fn = lambda: fisher_spec(inputs, k.fisher_batches)  # noqa: E731
        if c.model.source != "toy" or inputs.world is None:
            n = k.fisher_batches * c.trainer.batch_size
            self.generate(c, inputs.base, lambda: _samples_part().source_spec(inputs), n, "", a, 1,
                          "context-free samples of the base for the Fisher")
        art, why = self.artifact("fisher", spec_fn)
        step = Step("fisher", None, f"EWC's Fisher: {k.fisher_batches} batches of {c.trainer.batch_size} × "
                                    f"{c.trainer.max_seq_len} tokens (fp32)")
        if a is not None:
            e = fisher_memory(a, c.trainer.batch_size, c.trainer.max_seq_len, self.device.gpu)
            tokens = k.fisher_batches * c.trainer.batch_size * c.trainer.max_seq_len
            e.tokens = tokens
            e.flops = train_flops(a, tokens, c.trainer.max_seq_len)  # a forward and a backward per batch
            self.finish(step, e, "float32", 1)
        self.add(step, art, why)

    def evaluate(self, c: Config, model: Artifact, world: Artifact | None, base: Artifact) -> None:

        names = [x.name for x in active(Evaluation(c, None, model, world, base))]
        if "base_samples" in names:
            a = self.arch(c)
            self.generate(c, base, lambda: base_samples_spec(c, base), c.eval.base_samples, "", a, 1,
                          "held-out context-free samples of the base (the KL's)", gen=heldout_generator(c))
            art, why = self.artifact("score", lambda: score_spec(c, base))
            self.add(Step("score", None, f"the base's losses on its {c.eval.base_samples} held-out samples"), art, why)
        art, why = self.artifact("evaluate", lambda: evaluate_spec(c, model, world, base))
        step = Step("evaluate", None, ", ".join(_evaluator_label(c, n) for n in names) or "nothing to evaluate")
        a = self.arch(c)
        if a is not None:
            e = c.eval
            context, assumed = eval_context(c, a, names)
            backend = BACKENDS[c.generator.backend]
            gen_tokens = max([e.max_gen_toks, int(e.gen_kwargs.get("max_gen_toks") or 0)] +
                             ([b.max_new_tokens for b in e.generative] if not backend.own_engine else []))
            est = eval_memory(a, c.model.dtype, e.batch_size, context, gen_tokens, self.device.gpu)
            if assumed:
                step.why = (f"sized at {e.batch_size} × {context} tokens per batch before new tokens (the tasks' "
                            "prompts are known once they load): not checked before a run")
            if "sharpness" in names:
                est.parts["base model (fp32, sharpness)"] = 4 * a.params
                est.peak += 4 * a.params
            if e.generative and backend.own_engine:  # the engine after the HF model is freed
                g = c.generator
                longest = max(b.max_new_tokens for b in e.generative) + c.trainer.max_seq_len
                v, _, _ = backend.memory(a, g, backend.dtype(g, c.model.dtype), self.device, longest)
                if v.peak > est.peak:
                    est = v
            self.finish(step, est, c.model.dtype, 1, flops=False)
        self.add(step, art, why)

    # estimates
    def train_estimate(self, step: Step, a: Arch, setup: TrainSetup, tokens: int | None, dtype: str,
                       devices: int = 1, fix=None) -> None:
        e = train_memory(a, setup)
        if tokens is not None:
            e.tokens = tokens
            e.flops = train_flops(a, tokens, setup.seq_len, setup.lora_rank, setup.sam)
        self.finish(step, e, dtype, devices, fix=fix, flops=tokens is not None)

    def generate_estimate(self, step: Step, c: Config, a: Arch, gen, prompt: int, n: int | None) -> None:
        backend = BACKENDS[gen.backend]
        dtype = backend.dtype(gen, c.model.dtype)
        length = prompt + gen.max_new_tokens
        e, ok, devices = backend.memory(a, gen, dtype, self.device, length)
        if n is not None:
            e.tokens = n * length
            e.flops = generate_flops(a, e.tokens)
        self.finish(step, e, dtype, devices, flops=n is not None)
        if not ok:  # vLLM refuses to start
            step.fit = "does not fit"
            step.why = "the KV cache vLLM would have left does not hold one sequence of prompt + new tokens"

    def finish(self, step: Step, e: Estimate, dtype: str, devices: int, fix=None, flops: bool = True) -> None:
        step.estimate, step.device, step.dtype = e, self.device, dtype
        e.devices = devices
        memory = self.device.memory if self.device.gpu else self.device.memory // max(1, devices)
        step.fit = fits(e.peak, memory)
        if flops and e.flops:
            step.time = seconds(e.flops, self.device, dtype, self.mfu, devices)
        if step.fit in ("does not fit", "tight") and fix is not None:
            step.fix = fix() if callable(fix) else fix


def _names_unknown(spec) -> bool:
    """Whether a spec names an artifact whose key is not known yet (anywhere inside it)."""
    if isinstance(spec, Artifact):
        return spec.key == UNKNOWN
    if isinstance(spec, dict):
        return any(_names_unknown(v) for v in spec.values())
    if isinstance(spec, (list, tuple)):
        return any(_names_unknown(v) for v in spec)
    return False


def _merge_note(a: Arch | None, dtype: str) -> str:
    """Merges stream over the checkpoints' shards on the CPU: bench/merge_memory.py's bound, 1.5 checkpoints."""
    size = f" ≤ ~{human(1.5 * DTYPE_BYTES[dtype] * a.params)}" if a else ""
    return f"host RAM{size} (streamed over shards, bench/merge_memory.py)"


def _hub_what(path: str, revision: str | None) -> str:
    from huggingface_hub import try_to_load_from_cache

    local = Path(path).expanduser().is_dir()
    try:
        cached = local or isinstance(try_to_load_from_cache(path, "config.json", revision=revision), str)
    except ValueError:
        cached = False
    return f"{path}@{revision or 'main'}: read in place" + ("" if cached else " (not in the local hub cache)")


def eval_context(c: Config, a: Arch, names: list[str]) -> tuple[int, bool]:
    """The longest sequence an evaluation scores in one batch, from what its active evaluators read, and whether it
    is assumed: lm-eval's own tasks (not the toy world's) at min(the model's context, EVAL_CONTEXT)."""
    e, lengths, assumed = c.eval, [1], False
    if "lmeval" in names:
        if all(t.startswith("toy_") for t in e.tasks + e.downstream):
            lengths.append(c.trainer.max_seq_len)  # the toy tasks' prompts are training-row sized
        else:
            lengths.append(min(a.max_positions or EVAL_CONTEXT, EVAL_CONTEXT))
            assumed = True
    if {"heldout", "sharpness"} & set(names) or ("robust" in names and c.needs_world()):
        lengths.append(c.model.pretrain.seq_len)
    if {"corpora", "robust"} & set(names):
        lengths.append(e.corpus_max_len)
    if {"test", "downstream_loss", "curve"} & set(names):
        lengths.append(c.trainer.max_seq_len)
    if "base_samples" in names:
        lengths.append(1 + c.generator.max_new_tokens)
    if "generative" in names:  # the benchmarks' prompts, before their new tokens
        lengths.append(min(a.max_positions or EVAL_CONTEXT, EVAL_CONTEXT))
        assumed = True
    return max(lengths), assumed


def _evaluator_label(c: Config, name: str) -> str:
    e = c.eval
    if name == "lmeval":
        return f"lm-eval {len(e.tasks)} + {len(e.downstream)} tasks (batch {e.batch_size})"
    if name == "generative":
        return f"{len(e.generative)} generative benchmarks ({c.generator.backend})"
    return name


def downstream_rows(c: Config, count: bool = True) -> tuple[int | None, str]:
    """The downstream rows training reads (after ``dataset.limit``): what the source knows without loading (the toy
    world's count, a local file's rows when ``count``), else ``dataset.n_rows``; None (with why) when none of these
    is known."""
    d = c.dataset
    n = DATASET_SOURCES[d.source].count(d, c.world, count)
    if n is None:
        n = d.n_rows
    if n is None:
        if d.limit is not None:
            return d.limit, ""  # at most the limit (exactly, for a source with more rows)
        return None, (f"dataset.n_rows is not set and {d.path} is not local: the step count is unknown "
                      "(set dataset.n_rows from the dataset card)")
    return (min(n, d.limit) if d.limit else n), ""


def _zero(t) -> tuple[int, bool, bool] | None:
    """(ZeRO stage, optimizer offloaded, parameters offloaded) of a trainer config under DeepSpeed, else None."""
    return zero_of(t.deepspeed)


def zero_of(deepspeed: dict | None) -> tuple[int, bool, bool] | None:
    """(ZeRO stage, optimizer offloaded, parameters offloaded) of a DeepSpeed config; None ({} or null) for none."""
    if not deepspeed:
        return None
    z = deepspeed.get("zero_optimization") or {}
    return (int(z.get("stage", 0)), (z.get("offload_optimizer") or {}).get("device", "none") != "none",
            (z.get("offload_param") or {}).get("device", "none") != "none")


def segment_setup(seg: dict, gpu: bool, micro_batch: int | None = None, grad_accum: int | None = None) -> TrainSetup:
    """A pretraining or continued-pretraining segment's step (``forgetting.train.pretrain``): fp32 weights (the parent
    loaded in fp32), AdamW, SAM when ρ > 0, its processes and DeepSpeed config; no checkpointing."""
    ds = zero_of(seg.get("deepspeed"))
    return TrainSetup(micro_batch=micro_batch or seg["batch_size"], seq_len=seg["seq_len"],
                      grad_accum=grad_accum or seg["grad_accum"], processes=seg.get("num_processes", 1),
                      weights="float32", autocast=seg["bf16"] and ds is None, sam=seg["rho"] > 0,
                      zero_stage=ds[0] if ds else None, ds_bf16=seg["bf16"], offload_optimizer=bool(ds and ds[1]),
                      offload_param=bool(ds and ds[2]), gpu=gpu)


def train_setup(c: Config, gpu: bool) -> TrainSetup:
    """The training step of a run's train stage, as the estimator reads it."""
    t, parts = c.trainer, c.method.parts()
    ds = _zero(t)
    opt = parts["optimizer"]
    return TrainSetup(
        micro_batch=t.batch_size, seq_len=t.max_seq_len, grad_accum=t.grad_accum, processes=t.num_processes,
        weights=train_dtype(c), autocast=t.bf16 and ds is None,
        lora_rank=c.method.lora_rank if parts["adapter"].name == "lora" else None,
        optimizer="adamw8bit" if opt.name == "adamw8bit" else "adamw",
        sam=opt.name == "sam" and c.method.rho > 0, regularizer=parts["regularizer"].name,
        zero_stage=ds[0] if ds else None, ds_bf16=t.bf16, offload_optimizer=bool(ds and ds[1]),
        offload_param=bool(ds and ds[2]), checkpointing=t.gradient_checkpointing, gpu=gpu)


# ---- what fits instead -----------------------------------------------------------------------------------------
def _zero3() -> dict:
    """The option ``deepspeed=zero3``, which the fixes suggest (found as that override would find it)."""
    return option("deepspeed", "zero3")


def _train_fixes(c: Config, a: Arch, device: Device, flops: float = 0.0, mfu: float = 0.4) -> str | None:
    """The cheapest change of the trainer (then the optimizer) whose estimate fits the device, as overrides with
    its estimate: the same effective batch (micro-batch × accumulation × processes), the same schedule; preferring
    the optimizer as configured, then the fewest devices, then the fewest changes, then the largest micro-batch."""
    t = c.trainer
    effective = t.batch_size * t.grad_accum * t.num_processes
    options = []
    zero_now = _zero(t)
    zeros = [None] if zero_now else [None, "zero3"]
    procs = sorted({t.num_processes, 2, 4, 8} - {p for p in (2, 4, 8) if p < t.num_processes})
    opts = [c.method.optimizer] + (["adamw8bit"] if c.method.optimizer == "adamw" else [])
    for zero in zeros:
        for p in procs:
            if p != t.num_processes and not (zero or zero_now):
                continue  # data parallel without ZeRO replicates everything: no less memory per device
            for ckpt in sorted({t.gradient_checkpointing, True}):
                for opt in opts:
                    b = t.batch_size
                    while b >= 1:
                        if effective % (b * p) == 0:
                            options.append((p, opt != c.method.optimizer, zero is not None, ckpt, b, zero, opt))
                        b //= 2
    for p, opt_changed, _, ckpt, b, zero, opt in sorted(
            options, key=lambda o: (o[1], o[0], o[2], o[3] != t.gradient_checkpointing, -o[4])):
        overrides = {}
        if zero:
            overrides["deepspeed"] = "zero3"
        if p != t.num_processes:
            overrides["trainer.num_processes"] = p
        if b != t.batch_size:
            overrides["trainer.batch_size"] = b
        accum = effective // (b * p)
        if accum != t.grad_accum:
            overrides["trainer.grad_accum"] = accum
        if ckpt != t.gradient_checkpointing:
            overrides["trainer.gradient_checkpointing"] = str(ckpt).lower()
        if opt_changed:
            overrides["method.optimizer"] = opt
        if not overrides:
            continue
        try:
            other = with_overrides(c, overrides)
        except ConfigError:  # e.g. SAM or EWC refuse DeepSpeed
            continue
        e = train_memory(a, train_setup(other, device.gpu))
        memory = device.memory if device.gpu else device.memory // p
        if fits(e.peak, memory) == "fits":
            hours = f", {duration(seconds(flops, device, 'bfloat16' if t.bf16 else 'float32', mfu, p))}" \
                if flops else ""
            return " ".join(f"{k}={v}" for k, v in overrides.items()) + \
                f" (~{human(e.peak)} per device{f' on {p} devices' if p > 1 else ''}{hours})"
    return None


def _midtrain_fixes(seg: dict, a: Arch, device: Device) -> str | None:
    """A smaller micro-batch of the continued pretraining, with the accumulation that keeps its batch."""
    b, batch = seg["batch_size"] // 2, seg["batch_size"] * seg["grad_accum"]
    while b >= 1:
        if batch % b == 0:
            e = train_memory(a, segment_setup(seg, device.gpu, micro_batch=b, grad_accum=batch // b))
            memory = device.memory if device.gpu else device.memory // seg.get("num_processes", 1)
            if fits(e.peak, memory) == "fits":
                return f"model.midtrain.batch_size={b} model.midtrain.grad_accum={batch // b} (~{human(e.peak)})"
        b //= 2
    return None


def with_overrides(c: Config, overrides: dict) -> Config:
    """``c`` with command-line style overrides applied (``deepspeed=zero3`` selects the option), validated again."""
    node = OmegaConf.structured(c)
    for key, value in overrides.items():
        if key == "deepspeed":
            OmegaConf.update(node, "trainer.deepspeed", _zero3(), merge=False)
        else:
            OmegaConf.update(node, key, OmegaConf.create({"v": value}).v if isinstance(value, str) else value,
                             merge=False)

    return validate(node)


# ---- the plan, printed; preflight ---------------------------------------------------------------------------
def stages(c: Config, device: Device | None = None, count_rows: bool = True) -> list[Step]:
    """Every stage the run would build or reuse, in the order it would run them (none is built). ``count_rows``:
    count a local data file's rows for the step count (else ``dataset.n_rows`` or ``dataset.limit``)."""
    device = device or plan_device(c)[0]
    planner = _Planner(c, device, c.plan.mfu)
    planner.count_rows = count_rows
    return planner.run()


def render(c: Config, steps: list[Step], device: Device, why: str, label: str = "") -> str:
    """The plan as text: one line per stage (stage, key, stored or to build, what), and under each estimated
    stage its memory per device by component, its FLOPs and time, and whether it fits."""
    lines = [f"plan: {label or c.method.label or c.method.name} (seed {c.seed}, store {c.store_dir}); estimates on "
             f"{device.name} ({human(device.memory)}"
             f"{' per device' if device.gpu else ' available host RAM'}, {why}) at MFU {c.plan.mfu:g}"]
    try:
        a = arch_of(c)
        count = next(f"{a.params / d:.3g}{u}" for d, u in ((1e9, "B"), (1e6, "M"), (1e3, "K"), (1, ""))
                     if a.params >= d)
        lines.append(f"  model     {count} parameters: {a.layers} layers, hidden {a.hidden}, {a.heads} "
                     f"heads ({a.kv_heads} key-value), MLP {a.intermediate}, vocabulary {a.vocab}"
                     f"{', tied' if a.tied else ''} (from {a.source})")
    except ConfigError as err:
        lines.append(f"  model     architecture unknown, nothing estimated: {err}")
    for s in steps:
        status = "hub" if s.stage == "hub" else ("stored" if s.stored else "build")
        key = s.key or "?" * 16
        count = f" ×{s.chunks}" if s.chunks not in (1, None) else (" ×?" if s.chunks is None else "")
        if s.stage == "hub":
            lines.append(f"  {s.stage:<9} {s.what}")
            continue
        lines.append(f"  {s.stage:<9} {key:<16}{count:<6} {status:<6} {s.what}")
        if s.key is None and s.stage != "hub" and s.why:
            lines.append(f"  {'':<9} key unknown: {s.why}")
        elif s.why:
            lines.append(f"  {'':<9} {s.why}")
        if s.host:
            lines.append(f"  {'':<9} {s.host}")
        e = s.estimate
        if e is None:
            continue
        on = f"{e.devices} × {s.device.name}" if e.devices > 1 else s.device.name
        verdict = {"fits": "fits", "tight": f"TIGHT (within ±{TOLERANCE:.0%} of the device: may run out of memory)",
                   "does not fit": "DOES NOT FIT"}[s.fit]
        lines.append(f"  {'':<9} memory {human(e.peak)} per device on {on}: {verdict}")
        lines.append(f"  {'':<9}   = " + " + ".join(f"{k} {human(v)}" for k, v in e.parts.items()))
        if e.host:
            lines.append(f"  {'':<9}   host RAM per process: {human(e.host)} (offloaded)")
        for note in e.notes:
            lines.append(f"  {'':<9}   ({note})")
        if e.flops:
            lines.append(f"  {'':<9} compute {e.flops:.2e} FLOPs ({e.tokens:.3g} tokens, padded: an upper bound), "
                         f"{duration(s.time) if s.time is not None else '?'} at MFU {c.plan.mfu:g} "
                         f"({s.dtype}{'' if e.devices == 1 else f', {e.devices} devices'})")
        if s.fit == "does not fit":
            lines.append(f"  {'':<9} fix: {s.fix}" if s.fix else f"  {'':<9} fix: none found among the trainer's "
                         "settings (fewer rows per batch, gradient checkpointing, DeepSpeed ZeRO-3 on up to 8 "
                         "devices, 8-bit AdamW)")
        elif s.fit == "tight" and s.fix:
            lines.append(f"  {'':<9} with room: {s.fix}")
    built = [s for s in steps if s.builds and s.time]
    if built:
        total = sum(s.time for s in built)
        lines.append(f"  total: {duration(total)} of training and generation to build "
                     f"(evaluation not timed: lm-eval's task sizes are known only once loaded)")
    return "\n".join(lines)


def print_plan(c: Config, label: str = "", run_dir: Path | None = None) -> list[Step]:
    """Print the plan; with ``run_dir`` (a job's output directory) also write it there as ``plan.json``, which a
    sweep's summary reads (:func:`summary`)."""
    device, why = plan_device(c)
    steps = stages(c, device)
    print(render(c, steps, device, why, label), flush=True)
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / PLAN_FILE).write_text(json.dumps({
            "label": label, "device": device.name, "mfu": c.plan.mfu,
            "steps": [{"stage": s.stage, "key": s.key, "builds": s.builds, "what": s.what, "fit": s.fit,
                       "peak": s.estimate.peak if s.estimate else None, "time": s.time, "fix": s.fix}
                      for s in steps]}, indent=1))
    return steps


PLAN_FILE = "plan.json"


def summary(sweep_dir: Path) -> str | None:
    """One paragraph over a sweep's plans: its distinct stages to build (a stage several jobs share is built once),
    their time, and those that do not fit. None when the sweep wrote no plans."""
    plans = [json.loads(p.read_text()) for p in sorted(Path(sweep_dir).glob(f"*/{PLAN_FILE}"))]
    if not plans:
        return None
    seen: dict[tuple, dict] = {}
    users: dict[tuple, list[str]] = {}
    unknown = 0
    for plan in plans:
        for s in plan["steps"]:
            if not s["builds"]:
                continue
            if s["key"] is None:  # not known yet: counted once per job
                unknown += 1
                seen[(s["stage"], str(id(s)))] = s
                users[(s["stage"], str(id(s)))] = [plan["label"]]
                continue
            seen.setdefault((s["stage"], s["key"]), s)
            users.setdefault((s["stage"], s["key"]), []).append(plan["label"])
    total = sum(s["time"] or 0 for s in seen.values())
    shared = sum(1 for k, names in users.items() if len(names) > 1)
    over = [(k, s) for k, s in seen.items() if s["fit"] == "does not fit"]
    lines = [f"sweep plan: {len(plans)} jobs, {len(seen)} distinct stages to build ({shared} shared by several jobs"
             + (f"; {unknown} with a key not known yet, counted once per job" if unknown else "") + f"), "
             f"{'≤ ' if unknown else ''}{duration(total)} of training and generation on {plans[0]['device']} at MFU "
             f"{plans[0]['mfu']:g}; {len(over)} stage(s) do not fit"]
    for (stage, key), s in over:
        lines.append(f"  - {stage} {s['key'] or '(key unknown)'} of {', '.join(users[(stage, key)])}: "
                     f"{human(s['peak'])} per device" + (f"; fix: {s['fix']}" if s["fix"] else ""))
    return "\n".join(lines)


# the stages preflight refuses: those whose estimate is checked against measured peaks (docs/plan.md); an
# evaluation's batch shapes depend on its tasks, and merges stream on the CPU
CHECKED = ("pretrain", "continue", "generate", "fisher", "train")


def preflight(c: Config) -> None:
    """Refuse (ConfigError, one line) a run with a stage to build whose estimate does not fit the device it will
    get — the real one here: the GPU's total memory, or the host's available RAM — naming a setting that fits.
    Writes nothing; counts no data rows (the memory does not depend on them)."""
    device = runtime_device(c)
    for s in stages(c, device, count_rows=False):
        if s.builds and s.fit == "does not fit" and s.stage in CHECKED:
            e = s.estimate
            on = f"{e.devices} × {device.name}" if e.devices > 1 else device.name
            memory = device.memory if device.gpu else device.memory // max(1, e.devices)
            top = sorted(e.parts.items(), key=lambda kv: -kv[1])[:3]
            raise ConfigError(
                f"stage {s.stage} ({s.key or 'key unknown'}) does not fit: ~{human(e.peak)} per device ("
                + ", ".join(f"{k} {human(v)}" for k, v in top) + f", ...) on {on} with {human(memory)}"
                f" (refused beyond +{TOLERANCE:.0%}): expected a setting that fits, e.g. "
                + (s.fix or "none found among the trainer's settings") + "; --plan shows the breakdown")
