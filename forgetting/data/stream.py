"""A pretraining corpus as a stream of packed rows: every row exactly ``seq_len`` tokens, documents concatenated
(each ``[start] text EOS``, as ``encode_text`` starts and ends a document) and split across rows, never truncated,
never padded — so a step trains on exactly batch × accumulation × processes × seq_len tokens, and memory stays flat
however large the corpus (a document at a time is read and tokenized).

    python launch.py +experiment=olmo2_sam model.midtrain.corpus=/data/dolmino.jsonl    # 50B tokens, streamed
    pytest tests/data/test_stream.py
    python -m bench.stream_memory                                                      # peak memory vs corpus size

``PackedCorpus`` is a small picklable description (where the documents are, the tokenizer's directory, the row
length); every training process builds its iterable from it (``dataset()``). The stream never ends: when the
documents run out it starts over from the first, so the last batch of a pass is as full as any other (the trainer
stops at its step count). Documents are read in file order: a corpus meant to be seen shuffled (Dolmino is) is
stored shuffled. Rows attend across the document boundaries inside them, separated by EOS, as OLMo's pretraining
rows do.
"""
from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

from torch.utils.data import IterableDataset

from forgetting.data.encode import start_ids
from forgetting.models import load_tokenizer
from forgetting.toy.world import ToyWorld, reweighted_documents

TOKENIZE_BATCH = 256  # documents tokenized together (the fast tokenizer's batches are much faster than one by one)


def documents(path: str | Path, limit: Optional[int] = None) -> Iterator[str]:
    """The non-empty ``text`` of each row of a jsonl (or .jsonl.gz) file, in file order, at most ``limit`` of them;
    read line by line."""
    path = Path(path).expanduser()
    opener = gzip.open if path.suffix == ".gz" else open
    n = 0
    with opener(path, "rt", encoding="utf-8") as f:
        for line in f:
            if limit is not None and n >= limit:
                return
            if not line.strip():
                continue
            text = json.loads(line).get("text")
            if text:
                n += 1
                yield text


@dataclass(frozen=True)
class PackedCorpus:
    """Where a segment's documents come from and how they become rows (see the module docstring). ``path``: a jsonl
    of {"text": ...} rows (the first ``limit``); or ``world``: the toy world's directory, its corpus as written or,
    given
    ``mix``, ``n_docs`` new documents with the sentence kinds reweighted (``forgetting.toy.world.reweighted_corpus``,
    seeded by ``seed``)."""

    tokenizer: str
    seq_len: int
    path: Optional[str] = None
    limit: Optional[int] = None
    world: Optional[str] = None
    mix: Optional[tuple] = None
    seed: int = 0

    def texts(self) -> Iterator[str]:
        """One pass over the documents."""
        if self.path is not None:
            yield from documents(self.path, self.limit)
        elif self.mix:

            yield from reweighted_documents(Path(self.world), dict(self.mix), self.seed)
        else:
            yield from documents(ToyWorld(self.world).corpus_file)

    def rows(self) -> Iterator[dict]:
        """Packed rows, forever (pass after pass)."""

        tok = load_tokenizer(self.tokenizer)
        start, eos = start_ids(tok), [tok.eos_token_id]
        buffer: list[int] = []
        while True:
            empty = True
            for batch in _batches(self.texts(), TOKENIZE_BATCH):
                empty = False
                for ids in tok(batch, add_special_tokens=False).input_ids:
                    buffer += start + ids + eos
                while len(buffer) >= self.seq_len:
                    row, buffer = buffer[:self.seq_len], buffer[self.seq_len:]
                    yield {"input_ids": row, "labels": list(row), "weight": 1.0}
            if empty:
                raise ValueError(f"{self.path or self.world}: no document with a non-empty \"text\"")

    def dataset(self) -> IterableDataset:
        return _Stream(self)


class _Stream(IterableDataset):
    def __init__(self, corpus: PackedCorpus):
        self.corpus = corpus

    def __iter__(self):
        return self.corpus.rows()


def _batches(items: Iterator[str], size: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
