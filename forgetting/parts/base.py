"""The part kinds and their registries (see :mod:`forgetting.parts`): one :class:`~forgetting.registry.Registry` per
kind, ``PARTS[kind]``, filled by the :func:`register` class decorator.

    pytest tests/test_parts.py
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

from forgetting.errors import check
from forgetting.registry import Registry, copy_field
from forgetting.train.hooks import Hook

# kind → the part a method uses when it names none (the kinds, in the order a method lists them)
DEFAULT_PART = {"init": "base", "augment": "none", "adapter": "full", "regularizer": "none", "optimizer": "adamw",
                "merge": "none"}


@dataclass
class NoKnobs:
    pass


class Part:
    """One piece of a method. Subclasses set ``name`` and, if the part has settings, ``Knobs``."""

    kind: ClassVar[str] = ""
    name: ClassVar[str] = ""
    Knobs: ClassVar[type] = NoKnobs
    label: ClassVar[str] = ""  # how a run label names the part when the command line picks it

    def __init__(self, knobs: Any = None):
        self.knobs = knobs if knobs is not None else self.Knobs()

    def spec(self) -> dict:
        """What the part contributes to the key of the stage it changes: its name and its own knobs."""
        return {"name": self.name, **asdict(self.knobs)}

    def check(self, config) -> None:
        """Refuse (``ConfigError``, one line) the rest of a run's config the part cannot work with; called for a
        training run's active parts when the config is validated, before any stage."""

    def source_spec(self, ctx) -> dict | None:
        """The key of what the part reads beyond its knobs (the artifacts it builds or reads: sample chunks, replay
        rows, a Fisher estimate), computed without building anything; None if nothing."""
        return None

    def spec_with(self, ctx) -> dict:
        """The part's share of the train key: its spec, with its source's key when it reads one."""
        source = self.source_spec(ctx)
        return self.spec() if source is None else {**self.spec(), "source": source}

    def prepare(self, ctx) -> None:
        """Build what the part reads (e.g. a cached stage) before training; called inside the train stage's build."""


class Init(Part):
    """Where fine-tuning starts: the base model, or a model built from it (e.g. a recycled diff, paper 004)."""

    kind = "init"
    stage: ClassVar[str] = ""  # the stage that builds the starting model, if any

    def start(self, ctx):
        """The artifact training starts from (built here if needed): by default the base model."""
        return ctx.base

    def trains(self) -> bool:
        """False: the run evaluates :meth:`start`'s model as it is, without fine-tuning."""
        return True


class Augment(Part):
    """Rows mixed into fine-tuning, ``ratio`` of them per downstream row, with loss weight ``weight``."""

    kind = "augment"
    needs_bos: ClassVar[bool] = False  # samples from the BOS token alone (model.bos_token must resolve)
    generates: ClassVar[bool] = False  # samples the base model (generator.backend is used)

    def rows(self, ctx, n: int) -> list[dict]:
        """``n`` rows: ``{"text": ...}`` (loss on every token) or ``{"ids": [...], "n_prompt": k}``."""
        return []


class Adapter(Part):
    """What the train stage fine-tunes."""

    kind = "adapter"
    frozen_base: ClassVar[bool] = False  # the base weights are frozen: they load in model.dtype, not fp32

    def wrap(self, model, seed: int):
        return model


class TrainHook(Part, Hook):
    """A method part that changes the trainer's update: a trainer hook (forgetting/train/hooks.py) with knobs."""


class Regularizer(TrainHook):
    kind = "regularizer"


class Optimizer(TrainHook):
    kind = "optimizer"


class Merge(Part):
    """A post-hoc merge of the fine-tuned weights with the base's (after the train stage)."""

    kind = "merge"

    def merge(self, base_dir, tuned_dir, out_dir) -> None:
        raise NotImplementedError


# kind → its parts by name (method.<kind>=<name> picks one)
PARTS: dict[str, Registry[type[Part]]] = {kind: Registry(f"method.{kind}") for kind in DEFAULT_PART}
_KNOBS: dict[str, tuple[type, dataclasses.Field, type]] = {}  # knob → (its type, its field, the Knobs class)


def register(cls: type[Part]) -> type[Part]:
    """Class decorator: make ``cls`` a part ``method.<kind>=<name>`` can pick. A knob name belongs to one
    ``Knobs`` class, so two parts share a knob only by sharing the class."""
    if cls.kind not in PARTS:
        raise TypeError(f"part {cls.__name__}: kind={cls.kind!r} is invalid: expected one of {', '.join(PARTS)}")
    known = PARTS[cls.kind].get(cls.name)
    if not cls.name or (known is not None and known.__qualname__ != cls.__qualname__):
        raise TypeError(f"part {cls.__name__}: name={cls.name!r} is invalid: expected a new {cls.kind} name")
    hints = typing.get_type_hints(cls.Knobs)
    for f in dataclasses.fields(cls.Knobs):
        # the class that declares the knob (a Knobs class may extend another's, e.g. CFS's extends MixKnobs)
        declared = next(k for k in cls.Knobs.__mro__ if f.name in k.__dict__.get("__annotations__", {}))
        owner = _KNOBS.get(f.name)
        if owner is not None and owner[2].__qualname__ != declared.__qualname__:
            raise TypeError(f"part {cls.name}: knob {f.name!r} is already a knob of {owner[2].__qualname__}: "
                            "expected a new name, or the same Knobs class")
        _KNOBS[f.name] = (hints[f.name], f, declared)
    if known is None:
        PARTS[cls.kind].add(cls.name, cls)
    else:  # the same class imported again (a plug-in module under a second name): it replaces itself
        PARTS[cls.kind][cls.name] = cls
    return cls


def parts_of(kind: str) -> Registry[type[Part]]:
    return PARTS[kind]


def knob_fields() -> list[tuple[str, type, dataclasses.Field]]:
    """Every registered part's knobs, as ``make_dataclass`` fields of ``MethodConfig``."""
    return [(name, tp, copy_field(f)) for name, (tp, f, _) in _KNOBS.items()]


def active(method) -> dict[str, Part]:
    """kind → the part instance ``method`` picks, with its knobs read from the method config."""
    out = {}
    for kind, registry in PARTS.items():
        cls = registry[getattr(method, kind)]
        knobs = cls.Knobs(**{f.name: getattr(method, f.name) for f in dataclasses.fields(cls.Knobs)})
        out[kind] = cls(knobs)
    return out


def check_knob(ok: bool, knob: str, value: Any, expected: str) -> None:
    """A part knob's check, named as the command line sets it (``method.<knob>``)."""
    check(ok, f"method.{knob}", value, expected)


@dataclass
class MixKnobs:
    """The knobs every augmentation part shares (paper Eq. 2)."""

    ratio: float = 1.0  # augmentation rows per downstream row (paper §3: 1:1 unless set)
    weight: float = 1.0  # loss weight of the augmentation rows (λ in the paper's Eq. 2)

    def __post_init__(self) -> None:
        check_knob(self.ratio >= 0, "ratio", self.ratio, "a number >= 0")
        check_knob(self.weight >= 0, "weight", self.weight, "a number >= 0")
