"""Downstream rows as (query, response): per-dataset row builders, the one hub/local loader, chat encoding.

    pytest tests/data/test_formats.py

A builder maps one row of a dataset's own schema to ``{"query", "response"}``; the encoder then applies the
prompt format (``dataset.format``): ``plain`` fills ``dataset.prompt_template`` (MetaMathQA, paper Appendix B),
``chat`` wraps the query in the tokenizer's chat template as the user turn, with no system turn even where the
template would inject a default one (``chat_prompt_text``; MedReason, paper Appendix B).
"""
from __future__ import annotations

import re

from forgetting.config import DatasetConfig
from forgetting.data.builders import THINK_OPEN
from forgetting.data.encode import IGNORE
from forgetting.data.files import check_rows, file_builder, row_builder
from forgetting.errors import ConfigError


def load_source(path: str, subset: str | None, split: str, streaming: bool = False):
    """One ``datasets.load_dataset`` call for a hub id (with subset and split) or a data file (local path, glob
    or URL, loaded with the json/parquet/csv builder as its single ``train`` split)."""
    from datasets import load_dataset

    builder = file_builder(path)
    if builder:
        return load_dataset(builder, data_files=str(path), split="train", streaming=streaming)
    return load_dataset(str(path), subset, split=split, streaming=streaming)


def load_rows(cfg: DatasetConfig, test: bool = False, validation: bool = False) -> list[dict]:
    """``[{"query", "response"}]`` from a hub dataset (``source=hf``) or a local file (``source=jsonl``),
    through ``cfg.builder`` if set, else the ``query_field``/``response_field`` columns; ``test``: the test split
    (``dataset.test_path``, or the hub dataset's ``dataset.test_split``), every row; ``validation``: the held-out rows
    (``dataset.validation_path``, ``validation_split``, or the last ``validation_rows`` rows of ``dataset.path``'s
    source, which the training rows then leave out). Rows are checked as a local file is before any compute
    (``forgetting.data.files``): a source with a bad row is refused, naming it."""
    if cfg.source not in ("hf", "jsonl"):
        raise ValueError(f"dataset.source={cfg.source!r} has no rows to load here: expected 'hf' or 'jsonl'")
    key, path, split = "dataset.path", cfg.path, cfg.split
    if test:
        key, path, split = ("dataset.test_path", cfg.test_path, "train") if cfg.test_path else \
            ("dataset.test_split", cfg.path, cfg.test_split)
    elif validation and (cfg.validation_path or cfg.validation_split):
        key, path, split = ("dataset.validation_path", cfg.validation_path, "train") if cfg.validation_path else \
            ("dataset.validation_split", cfg.path, cfg.validation_split)
    whole = test or validation  # a held-out set is read whole: dataset.limit is the training rows'
    row_builder(cfg)  # an unknown dataset.builder fails before the data is loaded
    sources = [(key, path)] + ([] if whole else [("dataset.mix_with", other) for other in cfg.mix_with])
    out: list[dict] = []
    for key, path in sources:
        if cfg.limit and not whole and len(out) >= cfg.limit:
            break
        if cfg.source == "jsonl" and not file_builder(path):
            raise ConfigError(f"{key}={path!r} is invalid: expected a .json/.jsonl/.parquet/.csv file")
        ds = load_source(path, cfg.subset, split)
        columns = list(ds.column_names)
        if cfg.builder is None:
            for name, field in (("query_field", cfg.query_field), ("response_field", cfg.response_field)):
                if field not in columns:
                    raise ConfigError(f"dataset.{name}={field!r} is invalid: expected a field of {path}: it has "
                                      f"{columns}")
        if key == "dataset.path" and cfg.validation_rows and not test:
            ds = _hold_out(ds, cfg.validation_rows, validation)
        if cfg.limit and not whole:
            ds = ds.select(range(min(cfg.limit - len(out), len(ds))))
        where = path if key not in ("dataset.test_split", "dataset.validation_split") else split
        answers = re.compile(cfg.answer_pattern) if test else None
        out += [pair for _, pair in check_rows(key, where, ((f"row {i}", dict(r)) for i, r in enumerate(ds, 1)),
                                               cfg, answers)]
    return out


def _hold_out(ds, n: int, validation: bool):
    """The last ``n`` rows of ``ds`` (``validation``), or the rows before them (training)."""
    if n >= len(ds):
        raise ConfigError(f"dataset.validation_rows={n} is invalid: expected fewer than the {len(ds)} rows of "
                          "dataset.path, so that some are left to train on")
    return ds.select(range(len(ds) - n, len(ds)) if validation else range(len(ds) - n))


# Stand-ins for message texts while the chat template's layout is probed: plain words, so that no template
# filter (trim, split on "</think>", ...) changes them.
_USER, _ASSISTANT, _USER2, _SYSTEM = ({"role": role, "content": text} for role, text in (
    ("user", "probeuserturnone"), ("assistant", "probeassistantturn"), ("user", "probeuserturntwo"),
    ("system", "probesystemturn")))
_BOS_PROBE = "probebostoken"
_LAYOUTS: dict[tuple, tuple[str, str]] = {}


def _template_name(tokenizer) -> str:
    return getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__


def _system_turn(tokenizer) -> tuple[str, str]:
    """``(head, keep)``: what the chat template writes before a lone user turn's opener, and what of it to keep.

    "No system prompt" (paper Appendix B) is enforced, not assumed: some templates write a default system turn
    when the conversation has none (SmolLM2's "You are a helpful AI assistant named SmolLM…", Qwen2.5's). It is
    found from the template's own renders of short conversations with probe texts:
    - the user turn's *opener* is what a second user turn starts with: in a render of user/assistant/user, the
      text between the assistant's text and the second user's, minus what closes an assistant turn (the text
      after the assistant's in a render of user/assistant);
    - ``head`` is everything before the user's text in a render of the user turn alone, minus the opener;
    - ``keep`` is the BOS if the template writes its ``bos_token`` variable first (rendered once with a probe
      in its place), else nothing;
    - what lies between ``keep`` and the opener is a system turn if a render with an explicit system message
      has the same frame there with the message in place of the template's default text (SmolLM2:
      ``<|im_start|>system\\n…<|im_end|>\\n``). Then it is dropped. A template that writes nothing there
      (R1-Distill's: BOS, then ``<｜User｜>``) or whose preamble is no system turn is left exactly as it renders.
    """
    key = (tokenizer.chat_template, tuple(sorted(tokenizer.special_tokens_map.items())))
    if key in _LAYOUTS:
        return _LAYOUTS[key]

    def render(messages, **kw) -> str:
        return tokenizer.apply_chat_template(messages, tokenize=False, **kw)

    def before(message, messages, **kw) -> str:
        return render(messages, **kw).partition(message["content"])[0]

    def after(message, messages) -> str:
        return render(messages).partition(message["content"])[2]

    def fail(why: str) -> ValueError:
        return ValueError(f"chat template of tokenizer {_template_name(tokenizer)!r}: cannot tell its system turn "
                          f"from its user turn ({why}): expected a template that renders user and assistant turns "
                          "in order")

    try:
        closed = after(_ASSISTANT, [_USER, _ASSISTANT])
        between = after(_ASSISTANT, [_USER, _ASSISTANT, _USER2]).partition(_USER2["content"])[0]
        head = before(_USER, [_USER])
        bos_first = before(_USER, [_USER], bos_token=_BOS_PROBE).startswith(_BOS_PROBE)
    except Exception as e:  # a template that refuses the probe conversation (jinja raise_exception, ...)
        raise fail(f"{type(e).__name__}: {e}") from None
    keep = (tokenizer.bos_token or "") if bos_first else ""
    opener = between[len(closed):] if between.startswith(closed) else ""
    if not opener or not head.endswith(opener) or not head.startswith(keep):
        raise fail(f"no user-turn opener found before a lone user turn; it renders as {head!r}")
    head = head[: len(head) - len(opener)]
    try:
        with_system = before(_USER, [_SYSTEM, _USER])
    except Exception:  # templates that refuse a system message write none of their own either
        with_system = ""
    # a system turn: the explicit message takes the place of the template's default text, inside the same frame
    region = head[len(keep):]
    left, found, right = with_system[len(keep): len(with_system) - len(opener)].partition(_SYSTEM["content"])
    is_system = bool(region and found and with_system.startswith(keep) and with_system.endswith(opener)
                     and region.startswith(left) and region.endswith(right) and len(left) + len(right) <= len(region))
    _LAYOUTS[key] = head, keep if is_system else head
    return _LAYOUTS[key]


def chat_prompt_text(tokenizer, query: str) -> str:
    """The chat template's user turn holding ``query`` and its generation prompt, with no system turn even where
    the template would inject a default one (``_system_turn``)."""
    head, keep = _system_turn(tokenizer)
    text = tokenizer.apply_chat_template([{"role": "user", "content": query}], add_generation_prompt=True,
                                         tokenize=False)
    if not text.startswith(head):
        raise ValueError(f"chat template of tokenizer {_template_name(tokenizer)!r} renders this query's turn "
                         f"without its usual start {head!r}: expected the same system turn for every query")
    return keep + text[len(head):]


def encode_rendered(tokenizer, text: str) -> list[int]:
    """Token ids of a rendered chat prompt (the template wrote its special tokens, so none are added), which must
    start with the tokenizer's BOS exactly once; a tokenizer that declares no BOS gets what its template writes.
    Later BOS ids are fine: where BOS is a turn marker (SmolLM2's ``<|im_start|>``), every turn starts with one."""
    ids = list(tokenizer(text, add_special_tokens=False).input_ids)
    bos = tokenizer.bos_token_id
    if bos is not None and (not ids or ids[0] != bos or ids[1:2] == [bos]):
        n = next((i for i, t in enumerate(ids) if t != bos), len(ids))
        raise ValueError(f"chat template of tokenizer {_template_name(tokenizer)!r} starts the prompt with {n} BOS "
                         f"tokens (id {bos}): expected exactly one, first")
    return ids


def chat_prompt_ids(tokenizer, query: str) -> list[int]:
    """The user turn and the assistant header, no system turn; exactly one BOS, at the start."""
    return encode_rendered(tokenizer, chat_prompt_text(tokenizer, query))


def encode_chat(tokenizer, query: str, response: str, max_len: int, weight: float = 1.0) -> dict:
    """``BOS <user> query <assistant> response EOS`` with loss on the response and EOS only.

    Newer R1-Distill templates end the generation prompt with ``<think>\\n``; a response that also opens with
    ``<think>\\n`` (MedReason's builder) would then carry it twice, so the response's copy is dropped and the
    trained sequence is the same with either template version."""
    prompt = chat_prompt_text(tokenizer, query)
    p = encode_rendered(tokenizer, prompt)
    if prompt.endswith(THINK_OPEN) and response.startswith(THINK_OPEN):
        response = response[len(THINK_OPEN):]
    r = list(tokenizer(response, add_special_tokens=False).input_ids)
    eos = tokenizer.eos_token_id
    if not r or r[-1] != eos:
        r.append(eos)
    ids = (p + r)[:max_len]
    labels = ([IGNORE] * len(p) + r)[:max_len]
    return {"input_ids": ids, "labels": labels, "weight": weight}
