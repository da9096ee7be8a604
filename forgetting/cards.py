"""Paper cards: every hyperparameter a GPU preset sets, as its paper states it (value, section, the paper's words),
checked against the config the preset composes. A departure from the paper is declared with its reason; any other
difference, a setting of the preset's yamls that no entry covers, or a missing category is an error.

    python -m forgetting.cards                  # check every GPU preset's card; list each preset's departures
    python -m forgetting.cards r1_table5        # one card, entry by entry: the paper's value, this config's
    python -m forgetting.cards --write          # render the cards into docs/papers/<paper>.md

A card is ``docs/cards/<preset>.yaml`` (outside conf/, where Hydra would take it for a config option):

    paper: "000"                     # the paper's number: its page is docs/papers/000.md
    title: Table 2 — ...             # what the preset reproduces
    sweep:                           # the preset's multirun sweep (hydra.sweeper.params), in its order, each
      method: {base: Base, ft: FT}   #   value with the paper's name for it
    entries:
      - key: trainer.lr              # a path of the composed config; ``*`` for every element of a list (a list
                                     #   of named entries also takes a name: eval.generative.aime24.n_samples);
                                     #   or arithmetic over paths: trainer.batch_size * trainer.grad_accum
        category: lr                 # one of CATEGORIES; a card has every one of REQUIRED
        paper: 5.0e-6                # the paper's value, in this config's terms; omitted where it states none
        source: '§3: “…”'            # where the paper says it, in its words (between “ ”)
        here: ...                    # with ``why``: this config's value where it is not ``paper`` (a declared
        why: ...                     #   departure), or where the paper states none
        note: ...                    # optional: how the paper's words map to the value
        when: {method: [cs, cfs]}    # optional: the sweep points the entry is about (default: all)
        tolerance: 0.05              # optional: relative, for the paper's "approx."
    not_hyperparameters:             # keys the preset's yamls set that change neither the updates nor the scores
      trainer.save_steps: a resumed run ends where an uninterrupted one does
    notes: [...]                     # optional, rendered below the table

A path ``*`` entry with a single value holds for every element; a list value is compared in order. Every key the
preset's yamls set (the preset itself, each option it selects, each method it sweeps, the eval options named in
``eval.generative_from``), every knob of every active method part and the sampling settings that part reads
(PART_SETTINGS) must be covered by an entry that holds at that point, or be a not-hyperparameter; an option's
``name`` (and a method's ``label``) is its identity, not a setting.
"""
from __future__ import annotations

import argparse
import ast
import dataclasses
import itertools
import math
import re
import sys
from pathlib import Path
from typing import Any

import yaml

from forgetting.compose import register, validate
from forgetting.evaluate.lmeval import metric_key

ROOT = Path(__file__).resolve().parents[1]
CONF, CARDS, PAGES = ROOT / "conf", ROOT / "docs" / "cards", ROOT / "docs" / "papers"

PAPERS = {"000": "Context-Free Synthetic Data Mitigates Forgetting",
          "003": "Sharpness-Aware Pretraining Mitigates Catastrophic Forgetting",
          "004": "Efficient Model Development through Recycling Fine-tuning"}
# Every GPU preset (an experiment preset whose model comes from the hub) and its paper; each has a card in
# docs/cards/<preset>.yaml, unless it is in CARD_PENDING. tests/test_cards.py fails on a hub-model preset missing here.
GPU_PRESETS = {"olmo_table2": "000", "olmo_table3": "000", "r1_table5": "000",
               "olmo2_sam": "003", "olmo2_recycle": "004", "llama3_recycle": "004"}
# Cards not written yet, and why: their tests are expected failures (strict: a card that passes must leave this list)
CARD_PENDING: dict[str, str] = {}

REQUIRED = ("model", "revision", "data", "lr", "schedule", "warmup", "batch", "steps", "seq_len", "precision",
            "optimizer", "eval_suite", "shots", "metric")
CATEGORIES = REQUIRED + ("method", "sampling", "engine", "seed")
FIELDS = {"key", "category", "paper", "source", "here", "why", "note", "when", "tolerance"}
CARD_FIELDS = {"paper", "title", "sweep", "entries", "not_hyperparameters", "notes"}
# what an augmentation part reads beyond its own knobs (method.<knob>): the sampler's settings, the replay source
PART_SETTINGS = {
    "context_free": ("generator.temperature", "generator.top_p", "generator.max_new_tokens", "generator.backend",
                     "model.bos_token"),
    "contextual": ("generator.contextual_temperature", "generator.top_p", "generator.max_new_tokens",
                   "generator.backend"),
    "replay": ("replay.source", "replay.path", "replay.max_rows"),
}
_PATH = re.compile(r"^[A-Za-z_]\w*(\.(\w+|\*))*$")
BEGIN = "<!-- paper cards: generated by `python -m forgetting.cards --write` from docs/cards/*.yaml; edit those -->"
END = "<!-- end of paper cards -->"


class CardError(ValueError):
    """A card that cannot be read: an unknown field, an entry without its source, a departure without a reason."""


def _functions() -> dict:

    return {"metric_key": metric_key,  # the lm-eval metric,filter key a task reports (eval.metrics, else acc,none)
            "metric_keys": lambda metrics, tasks: [metric_key(metrics, t) for t in tasks],
            # the DeepSpeed ZeRO stage of a trainer.deepspeed config (null: no DeepSpeed)
            "zero_stage": lambda ds: None if not ds else (ds.get("zero_optimization") or {}).get("stage", 0)}


# -- reading a card --------------------------------------------------------------------------------------------------

def load(preset: str) -> dict:
    """The card of ``preset``, its fields checked; raises CardError with one line naming the card and the entry."""
    path = CARDS / f"{preset}.yaml"
    if not path.exists():
        raise CardError(f"{preset}: no card: expected docs/cards/{preset}.yaml (or the preset in CARD_PENDING)")
    where = f"docs/cards/{preset}.yaml"
    try:
        card = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise CardError(f"{where}: not YAML: {' '.join(str(err).split())}") from None
    unknown = set(card) - CARD_FIELDS
    _need(not unknown, where, f"unknown fields {sorted(unknown)}: expected {sorted(CARD_FIELDS)}")
    _need(card.get("paper") in PAPERS, where, f"paper={card.get('paper')!r}: expected one of {sorted(PAPERS)}")
    _need(GPU_PRESETS.get(preset) == card["paper"], where,
          f"paper={card['paper']!r}: GPU_PRESETS (forgetting/cards.py) gives {GPU_PRESETS.get(preset)!r}")
    _need(bool(card.get("title")), where, "no title")
    card.setdefault("sweep", {})
    card.setdefault("not_hyperparameters", {})
    card.setdefault("notes", [])
    _need(all(isinstance(names, dict) for names in card["sweep"].values()), where,
          "sweep: expected {parameter: {value: the paper's name for it}}")
    _need(isinstance(card.get("entries"), list) and card["entries"], where, "no entries")
    for i, e in enumerate(card["entries"]):
        _need(isinstance(e, dict), f"{where} entry {i}", "expected a mapping (key, category, paper, source, ...)")
        at = f"{where} entry {i} ({e.get('key')})"
        _need(not set(e) - FIELDS, at, f"unknown fields {sorted(set(e) - FIELDS)}: expected {sorted(FIELDS)}")
        _need(isinstance(e.get("key"), str) and bool(e["key"]), at, "no key")
        _need(e.get("category") in CATEGORIES, at, f"category={e.get('category')!r}: expected one of {CATEGORIES}")
        _need(bool(e.get("source")), at, "no source: where the paper says it, or says nothing (and where you looked)")
        _need(("here" in e) == ("why" in e), at, "here and why go together: a value here and the reason for it")
        _need("paper" in e or "here" in e, at, "neither paper nor here: where the paper states none, give here and why")
        if "paper" in e and "here" in e:
            _need(not _same(e["here"], e["paper"], e.get("tolerance")), at,
                  f"here={e['here']!r} equals paper: not a departure (drop here and why)")
        for param, values in (e.get("when") or {}).items():
            _need(param in card["sweep"], at, f"when: {param!r} is not a sweep parameter of the card")
            for v in _as_list(values):
                _need(str(v) in map(str, card["sweep"][param]), at, f"when: {param}={v} is not in the sweep")
        try:
            _references(e["key"])
        except (SyntaxError, CardError) as err:
            raise CardError(f"{at}: key is invalid: {err}") from None
    return card


def _need(ok: bool, where: str, what: str) -> None:
    if not ok:
        raise CardError(f"{where}: {what}")


def _as_list(v) -> list:
    return list(v) if isinstance(v, (list, tuple)) else [v]


# -- composing the preset --------------------------------------------------------------------------------------------

def sweep_of(preset: str) -> dict[str, list[str]]:
    """The preset's multirun sweep: parameter → its values, in order."""
    params = ((_yaml(CONF / "experiment" / f"{preset}.yaml").get("hydra") or {}).get("sweeper") or {}).get("params")
    return {k: [v.strip() for v in str(vals).split(",")] for k, vals in (params or {}).items()}


def points(sweep: dict[str, list[str]]) -> list[dict[str, str]]:
    return [dict(zip(sweep, combo)) for combo in itertools.product(*sweep.values())]


def compose(preset: str, point: dict[str, str]):
    """``(typed config, Hydra's group choices)`` of one sweep point of ``preset``, as launch.py composes it."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf, open_dict


    register()
    overrides = [f"+experiment={preset}", *(f"{k}={v}" for k, v in point.items())]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = hydra_compose(config_name="config", overrides=overrides, return_hydra_config=True)
    choices = OmegaConf.to_container(cfg.hydra.runtime.choices)
    with open_dict(cfg):
        del cfg["hydra"]
    return validate(cfg), {g: o for g, o in choices.items() if o is not None and not g.startswith("hydra")}


def set_keys(preset: str, choices: dict[str, str], c, sweep: dict[str, list[str]]) -> dict[str, str]:
    """Every leaf key the preset's yamls set at this point → the file that sets it: the preset, each option it
    composes (following an option's defaults within its group), the eval options its generative suite is made of,
    and the sweep's parameters that are keys rather than groups. Identities (an option's name, a method's label)
    and descriptions no stage reads (``model.card``, ``dataset.n_rows``) are left out."""
    out: dict[str, str] = {}
    preset_yaml = _yaml(CONF / "experiment" / f"{preset}.yaml")
    for key in _leaves({k: v for k, v in preset_yaml.items() if k not in ("defaults", "hydra")}):
        out[key] = f"conf/experiment/{preset}.yaml"
    for group, option in choices.items():
        if group == "experiment":
            continue
        for path in _option_chain(group, option):
            for key in _leaves(_yaml(path), _package(path, group)):
                out.setdefault(key, str(path.relative_to(CONF.parent)))
    for name in c.eval.generative_from:
        for entry in _yaml(CONF / "eval" / f"{name}.yaml").get("generative", []):
            for field in entry:
                out[f"eval.generative.{entry['name']}.{field}"] = f"conf/eval/{name}.yaml"
    for param in sweep:
        if not (CONF / param).is_dir():
            out[param] = f"conf/experiment/{preset}.yaml (sweep)"
    identities = {f"{g}.name" for g in choices} | {"method.label"}
    # what an option says about itself that no stage reads: its model's architecture and its dataset's size as
    # their cards state them, for --plan (forgetting/plan.py)
    described = ("model.card.", "dataset.n_rows")
    return {k: v for k, v in out.items() if k not in identities and not k.startswith(described)
            and not re.fullmatch(r"eval\.generative\.\w+\.name", k)}


def _package(path: Path, group: str) -> str:
    """Where an option's keys land: its ``# @package`` header (``_global_``: the top level), else its group."""
    header = re.search(r"^#\s*@package\s+(\S+)", path.read_text(), flags=re.M)
    package = header.group(1) if header else group
    return "" if package == "_global_" else package


def _option_chain(group: str, option: str) -> list[Path]:
    path = CONF / group / f"{option}.yaml"
    chain = []
    for d in _yaml(path).get("defaults", []):
        if isinstance(d, str) and d != "_self_":
            chain += _option_chain(group, d)
    return chain + [path]


def _leaves(tree: dict, prefix: str = "") -> list[str]:
    """Dotted keys of a yaml's values (an empty section is a value); an option's own defaults list is not one."""
    out = []
    for k, v in tree.items():
        if k == "defaults" and (prefix == "" or "." not in prefix):
            continue
        key = f"{prefix}.{k}" if prefix else str(k)
        out += _leaves(v, key) if isinstance(v, dict) and v else [key]
    return out


def _yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text()) or {}


# -- values ----------------------------------------------------------------------------------------------------------

def resolve(c, key: str):
    """The value ``key`` names in the composed config ``c``: a path, or arithmetic over paths (module docstring)."""
    if _PATH.match(key):
        return _plain(_walk(c, key.split("."), key))
    return _plain(_eval(ast.parse(key, mode="eval").body, c, key))


def _walk(obj, parts: list[str], key: str):
    for i, part in enumerate(parts):
        if part == "*":
            if not isinstance(obj, (list, tuple)):
                raise CardError(f"{key}: '*' needs a list at {'.'.join(parts[:i])}")
            return [_walk(x, parts[i + 1:], key) for x in obj]
        if dataclasses.is_dataclass(obj):
            if part not in {f.name for f in dataclasses.fields(obj)}:
                raise CardError(f"{key}: the composed config has no key {'.'.join(parts[:i + 1])}")
            obj = getattr(obj, part)
        elif isinstance(obj, dict):
            if part not in obj:
                raise CardError(f"{key}: the composed config has no key {'.'.join(parts[:i + 1])} (has {sorted(obj)})")
            obj = obj[part]
        elif isinstance(obj, (list, tuple)):  # a list of named entries (eval.generative): the entry by its name
            named = [x for x in obj if getattr(x, "name", None) == part]
            if len(named) != 1:
                raise CardError(f"{key}: no single entry named {part!r} in {'.'.join(parts[:i])}")
            obj = named[0]
        else:
            raise CardError(f"{key}: {'.'.join(parts[:i])} is a value, not a section")
    return obj


_OPS = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
        ast.Div: lambda a, b: a / b}


def _eval(node, c, key: str):
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str)):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        return _OPS[type(node.op)](_eval(node.left, c, key), _eval(node.right, c, key))
    if isinstance(node, (ast.Name, ast.Attribute)):
        return _walk(c, _dotted(node).split("."), key)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _functions():
        return _functions()[node.func.id](*(_eval(a, c, key) for a in node.args))
    raise CardError(f"{key}: only paths, numbers, + - * / and {sorted(_functions())}(...) are allowed")


def _each(key: str) -> bool:
    """Whether ``key`` is a path through every element of a list (``a.*.b``)."""
    return bool(_PATH.match(key)) and "*" in key.split(".")


def _dotted(node) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    raise CardError("a path is names joined by dots")


def _references(key: str) -> tuple[list[str], bool]:
    """The config paths ``key`` reads, and whether it is a plain path (which covers its subkeys too)."""
    if _PATH.match(key):
        return [key], True
    found = []

    def visit(node):
        if isinstance(node, (ast.Name, ast.Attribute)):
            found.append(_dotted(node))
        elif isinstance(node, ast.Call):
            for a in node.args:
                visit(a)
        elif isinstance(node, ast.BinOp):
            visit(node.left)
            visit(node.right)
        elif not isinstance(node, ast.Constant):
            raise CardError(f"{type(node).__name__} is not allowed")

    visit(ast.parse(key, mode="eval").body)
    return found, False


def _plain(value):
    """Config objects as plain values: dataclasses as dicts, tuples as lists."""
    if dataclasses.is_dataclass(value):
        return _plain(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _same(got, want, tolerance: float | None = None, each: bool = False) -> bool:
    """``got`` (the config's) is ``want`` (the card's). ``each``: ``got`` is a ``*`` path's list, and a ``want``
    that is no list holds for every element. A card's "1e-3" (YAML 1.1 reads it as text) is a number."""
    if each and not isinstance(want, list):
        return isinstance(got, list) and bool(got) and all(_same(g, want, tolerance) for g in got)
    number = (int, float)
    if isinstance(got, number) and not isinstance(got, bool) and isinstance(want, str):
        try:
            want = float(want)
        except ValueError:
            return False
    if isinstance(got, number) and isinstance(want, number) and not isinstance(got, bool) \
            and not isinstance(want, bool):
        return math.isclose(got, want, rel_tol=tolerance or 1e-12)
    if isinstance(got, list) and isinstance(want, list):
        return len(got) == len(want) and all(_same(g, w, tolerance) for g, w in zip(got, want))
    if isinstance(got, dict) and isinstance(want, dict):
        return got.keys() == want.keys() and all(_same(got[k], want[k], tolerance) for k in got)
    return type(got) is type(want) and got == want


# -- checking --------------------------------------------------------------------------------------------------------

def _applies(entry: dict, point: dict[str, str]) -> bool:
    return all(point.get(p) in map(str, _as_list(v)) for p, v in (entry.get("when") or {}).items())


def _covers(entry_key: str, plain: bool, key: str) -> bool:
    """Whether an entry's path covers ``key``: the same path, or (a plain path) a section holding it; ``*`` matches
    one segment."""
    a, b = entry_key.split("."), key.split(".")
    if len(a) > len(b) or (len(a) < len(b) and not plain):
        return False
    return all(x == "*" or x == y for x, y in zip(a, b))


def check(preset: str) -> list[str]:
    """The card's problems against the composed preset, one line each (empty: the card holds). Raises CardError
    for a card that cannot be read."""
    card = load(preset)
    where = f"docs/cards/{preset}.yaml"
    problems: list[str] = []
    sweep = sweep_of(preset)
    declared = {p: [str(v) for v in vals] for p, vals in card["sweep"].items()}
    if declared != sweep:
        problems.append(f"{preset}: the card's sweep {declared} is not the preset's {sweep} (hydra.sweeper.params)")
        return problems
    entries = card["entries"]
    seen: dict[int, dict[str, Any]] = {i: {} for i in range(len(entries))}  # entry → {repr(value): value}
    uncovered: dict[str, str] = {}
    used_nh: set[str] = set()
    for point in points(sweep):
        c, choices = compose(preset, point)
        active = [(i, e) for i, e in enumerate(entries) if _applies(e, point)]
        for i, e in active:
            try:
                value = resolve(c, e["key"])
            except CardError as err:
                problems.append(f"{where}: {err}")
                continue
            seen[i][repr(value)] = value
        refs = [(*_references(e["key"]),) for _, e in active]
        needed = {k: f"set by {v}" for k, v in set_keys(preset, choices, c, sweep).items()}
        for kind, part in c.method.parts().items():
            for f in dataclasses.fields(part.Knobs):
                needed.setdefault(f"method.{f.name}", f"a knob of method part {kind}={part.name}")
            for key in PART_SETTINGS.get(part.name, ()):
                needed.setdefault(key, f"read by method part {kind}={part.name}")
        for key, source in needed.items():
            nh = [k for k in card["not_hyperparameters"] if _covers(k, True, key)]
            used_nh.update(nh)
            if nh or any(_covers(r, plain, key) for paths, plain in refs for r in paths):
                continue
            uncovered.setdefault(key, f"{source}, at {_point(point)}")
    for i, values in seen.items():
        e = entries[i]
        if not values:
            problems.append(f"{where}: entry {e['key']} holds at no sweep point (when: {e.get('when')})")
        elif len(values) > 1:
            problems.append(f"{where}: {e['key']} differs between the sweep points it is about ({sorted(values)}): "
                            f"split the entry with when:")
        else:
            value = next(iter(values.values()))
            want, whose = (e["here"], "the card's") if "here" in e else (e["paper"], "the paper's")
            if not _same(value, want, e.get("tolerance"), _each(e["key"])):
                fix = ("update here/why" if "here" in e else
                       "fix the preset, or declare the departure with here: and why:")
                problems.append(f"{preset}: {e['key']} is {_fmt(value)} in the composed config, {whose} is "
                                f"{_fmt(want)} ({_first_line(e['source'])}): {fix} in {where}")
    for key, source in uncovered.items():
        problems.append(f"{preset}: {key} ({source}) is in no entry of {where}: add its paper value, or "
                        f"list it under not_hyperparameters with the reason")
    for key in set(card["not_hyperparameters"]) - used_nh:
        problems.append(f"{where}: not_hyperparameters lists {key}, which the preset's yamls do not set")
    missing = [cat for cat in REQUIRED if cat not in {e["category"] for e in entries}]
    if missing:
        problems.append(f"{where}: no entry for categories {missing} (every card covers {list(REQUIRED)})")
    return problems


def _point(point: dict[str, str]) -> str:
    return " ".join(f"{k}={v}" for k, v in point.items()) or "the preset"


def _first_line(text: str, width: int = 90) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[:width - 1] + "…"


def departures(card: dict) -> list[dict]:
    return [e for e in card["entries"] if "paper" in e and "here" in e]


# -- rendering -------------------------------------------------------------------------------------------------------

def _fmt(value) -> str:
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, dict)):
        return yaml.safe_dump(value, default_flow_style=True, allow_unicode=True, width=10_000).strip()
    return str(value)


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def render_card(preset: str, card: dict) -> str:
    lines = [f"### `{preset}` — {card['title']}", "",
             f"`python launch.py +experiment={preset}` · card: `docs/cards/{preset}.yaml`", ""]
    for param, names in card["sweep"].items():
        lines.append(f"Sweep `{param}`: " + ", ".join(f"`{v}` ({_cell(n)})" for v, n in names.items()) + ".")
        lines.append("")
    gone = departures(card)
    if gone:
        lines.append("Departures from the paper: " + "; ".join(f"`{e['key']}`" for e in gone) + ".")
        lines.append("")
    lines += ["| | key | paper | source | here |", "|---|---|---|---|---|"]
    for e in card["entries"]:
        key = f"`{_cell(e['key'])}`"
        if e.get("when"):
            key += " (" + "; ".join(f"{p}: {', '.join(map(str, _as_list(v)))}" for p, v in e["when"].items()) + ")"
        paper = f"`{_cell(_fmt(e['paper']))}`" if "paper" in e else "not stated"
        if "tolerance" in e:
            paper += f" (±{e['tolerance'] * 100:g}%)"
        source = _cell(e["source"]) + (f" *{_cell(e['note'])}*" if e.get("note") else "")
        if "here" not in e:
            here = "as the paper"
        else:
            flag = "**departure**: " if "paper" in e else ""
            here = f"`{_cell(_fmt(e['here']))}` — {flag}{_cell(e['why'])}"
        lines.append(f"| {e['category']} | {key} | {paper} | {source} | {here} |")
    if card["not_hyperparameters"]:
        lines += ["", "Set by the preset, not hyperparameters: " + "; ".join(
            f"`{k}` ({_cell(v)})" for k, v in card["not_hyperparameters"].items()) + "."]
    for note in card["notes"]:
        lines += ["", f"- {_cell(note)}"]
    return "\n".join(lines)


def render_paper(paper: str) -> str:
    """The generated section of docs/papers/<paper>.md: every card of the paper's presets, and those pending."""
    parts = [BEGIN, "", "## Paper cards", "",
             "Each GPU preset of this paper against the paper's own words: the value the paper states, where, and "
             "this config's value; a departure says why. `tests/test_cards.py` composes every preset and fails on "
             "any difference a card does not declare.", ""]
    for preset, p in GPU_PRESETS.items():
        if p != paper:
            continue
        if preset in CARD_PENDING:
            parts += [f"### `{preset}` — card pending", "", f"Card pending: {CARD_PENDING[preset]}.", ""]
        else:
            parts += [render_card(preset, load(preset)), ""]
    return "\n".join(parts + [END]) + "\n"


def page_in_sync(paper: str, write: bool = False) -> bool:
    """Whether docs/papers/<paper>.md holds the rendering of its cards (``write``: make it so)."""
    path = PAGES / f"{paper}.md"
    text = path.read_text() if path.exists() else f"# Paper {paper} — {PAPERS[paper]}\n\n"
    head = text.split(BEGIN)[0]
    tail = text.split(END, 1)[1].lstrip("\n") if END in text else ""
    new = head + render_paper(paper) + (("\n" + tail) if tail else "")
    if write and new != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(new)
    return new == text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Check the GPU presets against their paper cards (docs/cards/).")
    ap.add_argument("presets", nargs="*", help="presets to check (default: every GPU preset with a card)")
    ap.add_argument("--write", action="store_true", help="render the cards into docs/papers/<paper>.md")
    args = ap.parse_args(argv)
    if args.write:
        for paper in sorted(set(GPU_PRESETS.values())):
            print(f"docs/papers/{paper}.md: {'unchanged' if page_in_sync(paper, write=True) else 'written'}")
        return 0
    failed = False
    for preset in args.presets or [p for p in GPU_PRESETS if p not in CARD_PENDING]:
        try:
            problems = check(preset)
            card = load(preset)
        except CardError as err:
            problems, card = [str(err)], None
        failed |= bool(problems)
        print(f"{preset}: {'FAILS' if problems else 'holds'}")
        for p in problems:
            print(f"  error: {p}")
        for e in departures(card) if card else []:
            print(f"  departure: {e['key']} = {_fmt(e['here'])} (paper: {_fmt(e['paper'])}): {e['why']}")
    for preset, why in CARD_PENDING.items():
        print(f"{preset}: card pending ({why})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
