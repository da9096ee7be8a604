"""Composition: the typed config of one run, assembled from the schema's groups (``forgetting.config``) and the
knobs of every registered method part (``forgetting.parts``) and evaluator (``forgetting.evaluate.evaluators``),
registered with Hydra, and validated — the schema's own value checks, then the checks that need a lower layer to
read (a GGUF file, a data file's format, a benchmark kind, a corpus name, a named device). What a run reads from
disk before compute is checked one layer up, in ``forgetting.checks``.

    python launch.py --cfg job                      # the composed config
    python launch.py method.ratio=-1                # fails: one line naming the bad value

Unknown keys fail at composition (Hydra structured configs).
"""
from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from typing import Optional

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, ListConfig, OmegaConf

from forgetting import parts
from forgetting.config import (
    DatasetConfig,
    EvalCore,
    GeneratorConfig,
    LoggerConfig,
    MethodCore,
    ModelConfig,
    PlanConfig,
    ReplayConfig,
    TrainerConfig,
    WorldConfig,
)
from forgetting.data.files import file_builder, is_local, local_files
from forgetting.data.offline import CORPORA, corpus_name, is_corpus_file
from forgetting.errors import ConfigError
from forgetting.errors import check as _check
from forgetting.errors import check_local as _check_local
from forgetting.estimate import DEVICES
from forgetting.evaluate import evaluators
from forgetting.evaluate.benchmarks import BENCHMARK_KINDS
from forgetting.models import gguf_path


def _method_check(self) -> None:
    """The method picks a registered part of each kind; every part's knobs are checked, active or not (a bad value
    in a sweep fails before it runs)."""
    for kind in parts.DEFAULT_PART:
        names = parts.parts_of(kind)
        _check(getattr(self, kind) in names, f"method.{kind}", getattr(self, kind), f"one of {', '.join(names)}")
    seen = set()
    for kind in parts.DEFAULT_PART:
        for part in parts.parts_of(kind).values():
            if part.Knobs not in seen:
                seen.add(part.Knobs)
                part.Knobs(**{f.name: getattr(self, f.name) for f in dataclasses.fields(part.Knobs)})


def _method_parts(self) -> dict:
    """kind → the active part (forgetting.parts.Part), with its knobs."""
    return parts.active(self)


def _method_schema() -> type:
    parts.load()
    cls = dataclasses.make_dataclass("MethodConfig", parts.knob_fields(), bases=(MethodCore,),
                                     namespace={"__post_init__": _method_check, "parts": _method_parts})
    cls.__module__ = __name__  # pickled by name (training workers), like every other config class
    return cls


MethodConfig = _method_schema()


def _eval_check(self) -> None:
    """The shared settings' checks, then every registered evaluator's (its ``Knobs``), whose normalized values (the
    generative entries) are written back here."""
    EvalCore.__post_init__(self)
    evaluators.check_knobs(self)


def _eval_schema() -> type:
    """The eval group's schema: the settings several evaluators share (``forgetting.config.EvalCore``) and the
    knobs of every registered evaluator (``Evaluator.Knobs``), each checked by its own ``__post_init__``."""
    cls = dataclasses.make_dataclass("EvalConfig", evaluators.knob_fields(), bases=(EvalCore,),
                                     namespace={"__post_init__": _eval_check})
    cls.__module__ = __name__  # pickled by name (training workers), like every other config class
    return cls


EvalConfig = _eval_schema()


@dataclass
class Config:
    world: WorldConfig = field(default_factory=WorldConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    plan: PlanConfig = field(default_factory=PlanConfig)
    seed: int = 0  # fine-tuning and generation seed (the toy world has its own: world.seed)
    store_dir: str = ".store"  # the artifact store, shared by every run that points at it
    device: str = "cpu"
    label: Optional[str] = None  # row name in reports; default: method label

    def __post_init__(self) -> None:
        _check(bool(re.fullmatch(r"cpu|cuda(:\d+)?|mps", self.device)), "device", self.device,
               "cpu, cuda, cuda:N or mps")
        _check_model(self.model)
        _check_dataset(self.dataset)
        _check_eval(self.eval)
        _check_plan(self.plan)
        if self.generator.max_new_tokens is None:  # the BOS-only prompt's budget: one full training sequence
            self.generator.max_new_tokens = self.trainer.max_seq_len - 1
        for evaluator in evaluators.EVALUATORS.values():  # what each needs of the other groups
            evaluator.check(self)
        if self.method.train:
            for part in self.method.parts().values():
                part.check(self)

    def needs_world(self) -> bool:
        """Whether the run builds the toy world: for its model, its data, or its lm-eval tasks."""
        return "toy" in (self.model.source, self.dataset.source) or any(
            t.startswith("toy_") for t in self.eval.tasks + self.eval.downstream)

    def generates(self) -> bool:
        """Whether the run samples with the generator: generative benchmarks, or generated augmentation rows."""
        m = self.method
        return bool(self.eval.generative) or (m.train and m.ratio > 0 and m.parts()["augment"].generates)

    def needs_bos(self) -> bool:
        """Whether the run samples from the BOS token alone: CFS rows, or held-out base samples."""
        m = self.method
        return (m.train and m.parts()["augment"].needs_bos and m.ratio > 0) or self.eval.base_samples > 0


def register() -> None:
    cs = ConfigStore.instance()
    cs.store(name="schema", node=Config)


def validate(cfg: DictConfig) -> Config:
    """Build the typed object, which runs every ``__post_init__`` check; raises ConfigError."""
    from omegaconf.errors import OmegaConfBaseException

    _check_read(cfg)
    try:
        c = OmegaConf.to_object(cfg)
    except OmegaConfBaseException as err:  # a mandatory value left at ???, a value of the wrong type
        raise ConfigError(compose_error(err, [])) from None
    _check_finite(c)
    return c  # type: ignore[return-value]


def _check_read(node, prefix: str = "") -> None:
    """Every key of the composed config is a field of its dataclass: a key nothing reads (``+seeed=1``, a typo
    added with ``+``, which Hydra lets into any node) is refused rather than ignored. Free-form dicts (a DeepSpeed
    config, ``eval.hflm``) are the libraries' own and are not walked."""
    if isinstance(node, ListConfig):
        for i in range(len(node)):
            _check_read(node._get_node(i), f"{prefix}[{i}].")
        return
    if not isinstance(node, DictConfig) or not dataclasses.is_dataclass(OmegaConf.get_type(node)):
        return
    fields = {f.name for f in dataclasses.fields(OmegaConf.get_type(node))}
    for key in node.keys():
        child, name = node._get_node(key), f"{prefix}{key}".replace(".[", "[")
        if key not in fields:
            value = OmegaConf.to_container(child, resolve=False) if isinstance(child, (DictConfig, ListConfig)) \
                else child._value()
            raise ConfigError(f"{name}={value} is invalid: expected a key the config reads, as `python launch.py "
                              f"--cfg job` lists them (no config group, part or evaluator reads {name})")
        _check_read(child, f"{name}.")


def _check_finite(obj, prefix: str = "") -> None:
    """No float of the typed config is inf or nan (a field may allow them with ``metadata={"finite": False}``).
    Every float knob's own check states its finite range (forgetting.errors.check); this catches one that states
    none."""
    for f in dataclasses.fields(obj):
        value, key = getattr(obj, f.name), f"{prefix}{f.name}"
        for i, v in enumerate(value if isinstance(value, list) else [value]):
            if dataclasses.is_dataclass(v):
                _check_finite(v, f"{key}[{i}]." if isinstance(value, list) else f"{key}.")
            elif f.metadata.get("finite", True):
                _check(True, key, value, "a finite number")


def compose_error(err: BaseException, overrides: list[str]) -> str:
    """One line for an error Hydra or OmegaConf raised while composing the config from the command line's
    ``overrides`` (their own reports take several lines): the override it concerns and what was expected."""
    from hydra.errors import MissingConfigException, OverrideParseException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError

    def first_line(e: BaseException) -> str:
        text = str(e).strip()
        return text.splitlines()[0] if text else type(e).__name__

    def override(key: str, value: str = "???") -> str:
        given = [o for o in overrides if o.lstrip("+~").split("=", 1)[0] == key]
        return given[-1] if given else f"{key}={value}"

    if isinstance(err, MissingConfigException) and err.missing_cfg_file and err.options is not None:
        group, _, name = err.missing_cfg_file.rpartition("/")
        return f"{override(group, name)} is invalid: expected one of {', '.join(err.options)} (conf/{group}/)"
    if isinstance(err, OverrideParseException):
        from hydra.core.override_parser.overrides_parser import OverridesParser

        parser, bad = OverridesParser.create(), None
        for o in overrides:
            try:
                parser.parse_override(o)
            except Exception:
                bad = o
                break
        return (f"{bad or ' '.join(overrides)} is invalid: expected key=value in Hydra's override syntax, a value "
                f"with special characters in quotes (key='<|x|>'): {first_line(err)}")
    cause = err.__cause__ if getattr(err.__cause__, "full_key", None) else err
    key = getattr(cause, "full_key", None)
    if key:
        message = first_line(cause)
        if isinstance(cause, (ConfigAttributeError, ConfigKeyError)):
            expected = f"a key of the config, as `python launch.py --cfg job` lists them ({message})"
        elif "expected " in message:  # an enum's "Invalid value 'x', expected one of [...]"
            expected = message.split("expected ", 1)[1]
        else:
            expected = f"a value of the key's type ({message})"
        return f"{override(key)} is invalid: expected {expected}"
    return f"{first_line(err)} (HYDRA_FULL_ERROR=1 prints the traceback)"


def _check_data_file(key: str, path: str) -> None:
    """A data file ``datasets`` can read: a known extension and, unless it is a URL, an existing local file."""
    _check(bool(file_builder(path)), key, path, "a .jsonl, .json, .parquet or .csv file (or .gz / .zst of one)")
    _check(not is_local(path) or all(os.path.isfile(f) for f in local_files(path)) and bool(local_files(path)), key,
           path, "an existing local file (or a URL)")


def _check_model(m: ModelConfig) -> None:
    if m.source == "gguf":
        try:
            found = gguf_path(m.path)
        except FileNotFoundError as err:
            raise ConfigError(str(err)) from None
        _check(found.is_file() and found.suffix == ".gguf", "model.path", m.path, "an existing .gguf file")


def _check_dataset(d: DatasetConfig) -> None:
    if d.source == "jsonl":
        for key, path in (("dataset.path", d.path), *(("dataset.mix_with", o) for o in d.mix_with)):
            _check_data_file(key, path)
    for key in ("test_path", "validation_path"):
        if getattr(d, key) is not None:
            _check_data_file(f"dataset.{key}", getattr(d, key))
    for key, where in (("test_split", "test rows go in dataset.test_path"),
                       ("validation_split", "held-out rows go in dataset.validation_path")):
        if getattr(d, key) is not None:
            _check(d.source == "hf" and not file_builder(d.path), f"dataset.{key}", getattr(d, key),
                   f"null unless dataset.path is a hub dataset (a file's {where})")


def _check_eval(e: EvalConfig) -> None:
    for b in e.generative:
        _check(b.kind in BENCHMARK_KINDS, f"eval.generative[{b.name}].kind", b.kind,
               f"one of {', '.join(BENCHMARK_KINDS)}")
    for name in e.corpora:
        _check(name in CORPORA or is_corpus_file(name), "eval.corpora", name,
               f"one of {sorted(CORPORA)} or a .jsonl file of {{\"text\": ...}} documents")
        if is_corpus_file(name):
            _check_local("eval.corpora", name)
    stems = [corpus_name(n) for n in e.corpora]
    _check(len(set(stems)) == len(stems), "eval.corpora", list(e.corpora),
           "corpora of distinct names (a file's metric is pre/<file stem>/loss)")


def _check_plan(p: PlanConfig) -> None:
    _check(p.device is None or p.device in DEVICES, "plan.device", p.device, f"null or one of {', '.join(DEVICES)}")
