"""What a run will read, checked before any stage starts and without building anything: the store, data files
row by row, lm-eval tasks, the model's tokenizer and prompt lengths, the optional packages the run needs. Called by
the launcher after :func:`forgetting.compose.validate`; raises ConfigError in one line.

    python launch.py dataset=jsonl dataset.path=bad.jsonl      # error: dataset.path='bad.jsonl' is invalid: ...
"""
from __future__ import annotations

import gzip
import json
import logging
import os
import re
import uuid
from glob import glob
from pathlib import Path
from typing import Optional

import yaml

from forgetting.compose import Config
from forgetting.config import DatasetConfig, MidtrainConfig
from forgetting.data.datasets import DATASET_SOURCES
from forgetting.data.files import check_file, content_problem, file_builder
from forgetting.data.offline import is_corpus_file
from forgetting.errors import ConfigError
from forgetting.errors import check as _check
from forgetting.evaluate.lmeval import TOY_TASKS, unknown_tasks
from forgetting.generate.backends import BACKENDS
from forgetting.models import bos_token_id, load_tokenizer
from forgetting.parts.context_free import resolve_starts
from forgetting.pipeline import world_spec
from forgetting.runtime import prompt_ids
from forgetting.store import StoreError, key_of, verify_mode
from forgetting.toy.world import ToyWorld


def check_inputs(c: Config) -> None:
    """What the run will read, checked before any stage starts (``launch.py`` calls this after :func:`validate`),
    writing nothing and loading no model: a writable store, data files that parse with every row usable
    (``forgetting.data.files``), lm-eval tasks that exist, a hub model that can be loaded, and, where its tokenizer
    loads without building anything (a local or cached model, or a toy world already in the store),
    ``model.bos_token`` and prompts that leave room for an answer in ``trainer.max_seq_len``. Raises ConfigError."""
    _check_store(c.store_dir)
    _check_files(c)
    _check_midtrain_corpus(c.model.midtrain)
    _check_corpora(c)
    rows = _check_data(c.dataset)
    _check_tasks(c)
    tokenizer = _model_tokenizer(c)
    if tokenizer is not None:
        _check_tokens(c, tokenizer, rows)


def _check_store(store_dir: str) -> None:
    """The store (created by the first stage, so not here) can be created or written; FORGETTING_STORE_VERIFY."""
    try:
        verify_mode()
    except StoreError as err:
        raise ConfigError(str(err)) from None
    path = Path(store_dir).expanduser().absolute()
    existing = next(p for p in (path, *path.parents) if p.exists())
    why = (f"{existing} is a file" if not existing.is_dir() else
           f"{existing} is not writable" if not os.access(existing, os.W_OK | os.X_OK) else _mkdir_refused(existing))
    _check(why is None, "store_dir", store_dir, f"a writable directory, or a path where one can be made ({why})")


def _mkdir_refused(parent) -> Optional[str]:
    """Why a directory cannot be made in ``parent``, found by making and removing one: access() passes where mkdir
    is refused all the same (/proc, /sys, a read-only mount, as root), and the first stage would fail there."""
    probe = parent / f".forgetting-probe-{uuid.uuid4().hex[:12]}"
    try:
        probe.mkdir()
    except OSError as err:
        return f"a directory cannot be made in {parent}: {err.strerror or err}"
    probe.rmdir()
    return None


def _check_files(c: Config) -> None:
    """The local model, benchmark, replay and task files the run reads are what their names say (a .gguf, a
    .safetensors, a config.json, a .parquet / .gz, a task .yaml): one line naming the file, not a reader's traceback.
    Data files' rows are checked by forgetting.data.files.check_file."""
    files = []  # (key, the value it names, a file)
    for key, path in (("model.path", c.model.path), ("method.recycle_tuned", getattr(c.method, "recycle_tuned", None)),
                      ("replay.path", c.replay.path),
                      ("model.midtrain.corpus", c.model.midtrain.corpus if c.model.midtrain.steps else None),
                      *((f"eval.generative[{b.name}].path", b.path) for b in c.eval.generative)):
        local = Path(path).expanduser() if path else None
        if local is None or not local.exists():
            continue
        files += [(key, path, f) for f in sorted(local.iterdir()) if f.is_file()] if local.is_dir() else \
            [(key, path, local)]
    for key, path, f in files:
        problem = content_problem(str(f))
        _check(problem is None, key, path, problem or "")
    for path in c.eval.include_path:
        for f in sorted(glob(os.path.join(os.path.expanduser(path), "**", "*.y*ml"), recursive=True)):
            _check(_yaml_problem(f) is None, "eval.include_path", path,
                   f"a directory of lm-eval task YAMLs ({f} is not YAML: {_yaml_problem(f)})")


def _yaml_problem(path: str) -> Optional[str]:
    """Why a task file is not YAML (lm-eval's own tags, ``!function``, are YAML)."""
    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("!", lambda loader, suffix, node: None)
    try:
        with open(path, "rb") as f:
            yaml.load(f, Loader=Loader)
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        return str(err).strip().splitlines()[0]
    return None


def _check_midtrain_corpus(m: MidtrainConfig) -> None:
    """A local corpus of continued pretraining: an existing jsonl whose first row has a non-empty "text"."""
    if m.steps == 0 or m.corpus == "world":
        return
    path = os.path.expanduser(m.corpus)
    _check(os.path.isfile(path) and path.endswith((".jsonl", ".jsonl.gz")), "model.midtrain.corpus", m.corpus,
           "'world' or an existing .jsonl(.gz) file of {\"text\": ...} documents")
    with (gzip.open if path.endswith(".gz") else open)(path, "rt", errors="replace") as f:
        try:
            first = json.loads(f.readline() or "null")
        except json.JSONDecodeError:
            first = None
    _check(isinstance(first, dict) and isinstance(first.get("text"), str) and bool(first["text"]),
           "model.midtrain.corpus", m.corpus, "a .jsonl whose rows are {\"text\": <non-empty string>}")


def _check_corpora(c: Config) -> None:
    """A held-out corpus file (``eval.corpora``) exists, its first row has a non-empty "text", and it is not the
    corpus the base is mid-trained on (its documents would not be held out)."""
    for name in filter(is_corpus_file, c.eval.corpora):
        path = os.path.expanduser(name)
        _check(os.path.isfile(path), "eval.corpora", name, "an existing .jsonl file of {\"text\": ...} documents")
        with open(path, errors="replace") as f:
            try:
                first = json.loads(f.readline() or "null")
            except json.JSONDecodeError:
                first = None
        _check(isinstance(first, dict) and isinstance(first.get("text"), str) and bool(first["text"]),
               "eval.corpora", name, "a .jsonl whose rows are {\"text\": <non-empty string>}")
        m, trained = c.model.midtrain, os.path.expanduser(c.model.midtrain.corpus)
        _check(m.steps == 0 or m.corpus == "world" or not os.path.exists(trained) or
               not os.path.samefile(path, trained), "eval.corpora", name,
               "held-out documents: not model.midtrain.corpus, which the base is trained on")


def _check_data(d: DatasetConfig) -> dict[str, list]:
    """``{key: [(where, row)]}`` of the local data files the run reads, every row checked (a bad row refuses its
    file); a hub dataset is checked when it is loaded."""
    rows = {}
    if DATASET_SOURCES[d.source].reads_path and file_builder(d.path):
        rows["dataset.path"] = check_file("dataset.path", d.path, d)[: d.limit]
    for other in d.mix_with:
        if file_builder(other):
            rows[f"dataset.mix_with {other}"] = check_file("dataset.mix_with", other, d)[: d.limit]
    if d.test_path is not None:
        rows["dataset.test_path"] = check_file("dataset.test_path", d.test_path, d, re.compile(d.answer_pattern))
    if d.validation_path is not None:
        rows["dataset.validation_path"] = check_file("dataset.validation_path", d.validation_path, d)
    return rows


def _check_tasks(c: Config) -> None:
    e = c.eval
    unknown = unknown_tasks(e.tasks + e.downstream, e.include_path, toy=c.needs_world())
    for key, names in (("eval.tasks", e.tasks), ("eval.downstream", e.downstream)):
        bad = [n for n in names if n in unknown]
        _check(not bad, key, bad[0] if bad else None, "the name of an lm-eval task or group: built in, in a directory "
               f"of eval.include_path, or one of the toy world's ({', '.join(TOY_TASKS)})")
    for group, members in e.groups.items():
        for t in members:
            _check(t in e.tasks, f"eval.groups.{group}", t, "a task of eval.tasks")
    for t in e.fewshot:
        _check(t in e.tasks + e.downstream, "eval.fewshot", t, "a task of eval.tasks or eval.downstream")


def _model_tokenizer(c: Config):
    """The model's tokenizer, if it loads without building anything; a hub id that cannot load offline is refused."""
    m = c.model
    if m.source == "hf":
        path, revision = m.path, m.revision
        if not Path(m.path).expanduser().is_dir():  # a hub id
            from huggingface_hub import constants, try_to_load_from_cache

            try:
                cached = try_to_load_from_cache(m.path, "config.json", revision=m.revision)
            except ValueError:  # not even a valid repo id
                cached = None
            _check(isinstance(cached, str) or not constants.HF_HUB_OFFLINE, "model.path", m.path,
                   "a local directory: set model.path to a local snapshot of the model (HF_HUB_OFFLINE=1 is set and "
                   "the local hub cache has no snapshot of this hub id)")
    elif m.source == "toy":
        world = ToyWorld(Path(c.store_dir).expanduser() / "world" / key_of("world", world_spec(c)))
        path, revision = world.tokenizer_dir, None
        if not path.is_dir():  # the world is not built yet: checked when it is (forgetting/pipeline.py)
            return None
    else:
        return None
    try:
        return load_tokenizer(path, m.trust_remote_code, revision)
    except (OSError, ValueError) as err:
        raise ConfigError(f"model.path={m.path!r} is invalid: expected a model whose tokenizer loads "
                          f"({type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''})"
                          ) from None


# the prompts (the shortest and the longest, by characters) whose tokens are counted before any compute: counting
# every prompt of a large dataset would take minutes (~9k prompts/s on one core)
PROMPTS_COUNTED = 256


def _check_tokens(c: Config, tokenizer, rows: dict[str, list]) -> None:
    """``model.bos_token``; and ``trainer.max_seq_len`` against the prompts: refused when even the shortest prompts
    leave no room for an answer token (no row could be learnt or scored), a warning when some of the longest do
    not (those rows add nothing; training counts them exactly, ``forgetting.pipeline.check_answers_fit``)."""
    m, max_len = c.model, c.trainer.max_seq_len
    if m.bos_token is not None or m.bos_token_id is not None or c.needs_bos():
        bos = bos_token_id(tokenizer, m.bos_token_id, m.bos_token)
        resolve_starts(tokenizer, c.method.starts, bos)
        if c.eval.base_samples_starts is not None:
            resolve_starts(tokenizer, c.eval.base_samples_starts, bos)
    for key, data in rows.items():
        by_chars = sorted(data, key=lambda wr: len(wr[1]["query"]))

        def tokens(part):
            return sorted((len(prompt_ids(tokenizer, c, row["query"])), where) for where, row in part)

        shortest = tokens(by_chars[:PROMPTS_COUNTED])
        if shortest:
            n, where = shortest[0]
            _check(n < max_len, "trainer.max_seq_len", max_len, f"more than the {n} tokens of the shortest prompt "
                   f"({key} {where}), so that rows have room for an answer token")
        longest = tokens(by_chars[-PROMPTS_COUNTED:])
        full = [(n, where) for n, where in longest if n >= max_len]
        if full:
            logging.getLogger("forgetting").warning(
                "trainer.max_seq_len=%d leaves no room for an answer token after %d of the %d longest prompts of %s "
                "(the longest: %d tokens, %s): those rows add nothing", max_len, len(full), len(longest), key,
                *full[-1])


def check_installed(c: Config) -> None:
    """The optional packages this run will need, found without importing them (``launch.py`` calls this right
    after :func:`validate`, before any stage runs); raises ConfigError naming the extra to install. Not part of
    :func:`validate`, so that every config still composes on a machine without the extras."""
    if c.generates():
        try:
            BACKENDS[c.generator.backend].require()
        except ImportError as err:  # one line naming the extra to install
            raise ConfigError(str(err)) from None
