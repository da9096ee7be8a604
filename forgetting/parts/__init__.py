"""Method parts: what a method is made of, one module per part.

    python launch.py method=cfs method.ratio=0.5          # a preset picks parts; each part owns its knobs
    python launch.py method=lora method.augment=context_free   # parts compose on the command line (Table 8)

A method (``conf/method/*.yaml``) picks one part of each kind — ``augment`` (rows mixed into fine-tuning),
``adapter`` (what is trained), ``regularizer`` and ``optimizer`` (hooks into the trainer's update), ``merge``
(post-hoc, on the weights) — and sets their knobs. A part is a class registered with the :func:`register` class
decorator into its kind's registry (``PARTS[kind]``, a :class:`forgetting.registry.Registry`): its
``Knobs`` dataclass holds its typed settings (``method.<knob>`` on the command line; several parts may share a knob
by sharing a ``Knobs`` class), and ``spec()`` is its contribution to the stage keys — its name and its own knobs,
so a knob of an inactive part never changes a key. Its hook into the stage it changes is its kind's method (see
:mod:`forgetting.parts.base`).

Every module in this package is a part module and is imported by :func:`load`; parts that live elsewhere (your
own regularizer, a test's) and evaluators that live elsewhere (``forgetting.evaluate.evaluators.register``) are
imported from ``FORGETTING_PLUGINS`` (comma-separated module names; ``FORGETTING_PARTS`` is read too), before the
config schema is built: one registry mechanism for both.
"""
from __future__ import annotations

import importlib
import os
import pkgutil

from forgetting.parts.base import DEFAULT_PART, PARTS, Part, active, knob_fields, parts_of, register

__all__ = ["DEFAULT_PART", "PARTS", "Part", "active", "knob_fields", "load", "parts_of", "register"]

_loaded = False


def load() -> None:
    """Import every part module (once): this package's, then the plug-in modules of ``FORGETTING_PLUGINS`` and
    ``FORGETTING_PARTS``."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    names = [f"{__name__}.{m.name}" for m in pkgutil.iter_modules(__path__) if m.name != "base"]
    for var in ("FORGETTING_PLUGINS", "FORGETTING_PARTS"):
        names += [n.strip() for n in os.environ.get(var, "").split(",") if n.strip()]
    for name in names:
        importlib.import_module(name)
