"""The one registry mechanism: a named, ordered table of things a config picks by name — method parts of each kind,
evaluators, generation backends, dataset row builders, benchmark kinds, offline corpora, data sources.

    BUILDERS = Registry("dataset.builder")

    @BUILDERS.register("metamathqa")
    def metamathqa(row): ...

    BUILDERS["metamathqa"]            # the function
    BUILDERS["nope"]                  # UnknownName: dataset.builder='nope' is unknown: expected one of metamathqa

A registry is a ``dict`` (name → entry, in registration order), so membership, iteration and ``", ".join(...)``
read as they always did; what it adds is the decorator, the refusal of a name registered twice, and a one-line
error naming the unknown value, the setting it came from and what is registered. Entries registered from outside
the package (``FORGETTING_PLUGINS``, :func:`forgetting.parts.load`) land in the same tables.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Generic, TypeVar

from forgetting.errors import ConfigError

T = TypeVar("T")


class UnknownName(ConfigError, KeyError):
    """A name no entry of a registry has (a ``ConfigError``: one line, exit 2 from the launcher)."""

    def __str__(self) -> str:  # KeyError quotes its argument; this is a sentence
        return str(self.args[0])


class Registry(dict, Generic[T]):
    """Entries by name, in registration order. ``what`` names the setting that picks one (e.g. ``"method.adapter"``,
    ``"generator.backend"``): it heads the error for an unknown name."""

    def __init__(self, what: str, entries: dict[str, T] | None = None):
        super().__init__()
        self.what = what
        for name, entry in (entries or {}).items():
            self.add(name, entry)

    def add(self, name: str, entry: T) -> T:
        """Register ``entry`` as ``name``; a name registered twice is refused (two plug-ins, one name)."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.what}: a registered name must be a non-empty string, not {name!r}")
        if name in self:
            raise ValueError(f"{self.what}: {name!r} is already registered")
        self[name] = entry
        return entry

    def register(self, name: str | None = None) -> Callable[[T], T]:
        """Decorator: register the function or class under ``name`` (default: its ``name`` attribute, else its
        ``__name__``)."""
        def deco(entry: T) -> T:
            self.add(name or getattr(entry, "name", None) or entry.__name__, entry)
            return entry
        return deco

    def __missing__(self, name):
        raise UnknownName(f"{self.what}={name!r} is unknown: expected one of {', '.join(self) or '(none registered)'}")

    def names(self) -> list[str]:
        return list(self)


def copy_field(f: dataclasses.Field) -> dataclasses.Field:
    """A new field with ``f``'s default (or default factory) and metadata: how a registered entry's own ``Knobs``
    field joins a config schema built with ``dataclasses.make_dataclass`` (method parts, evaluators)."""
    if f.default is not dataclasses.MISSING:
        return dataclasses.field(default=f.default, metadata=f.metadata)
    return dataclasses.field(default_factory=f.default_factory, metadata=f.metadata)
