"""Per-example values behind a metric, so that the report can put an interval on one run and pair two runs.

    pytest tests/test_report.py

Every metric recorded here is a ratio estimate over the examples of a fixed evaluation set: Σ wᵢ·vᵢ / Σ wᵢ
(exact match: vᵢ ∈ {0, 1}, wᵢ = 1; a held-out loss: vᵢ the document's mean token loss, wᵢ its token count, so that
the ratio is the token-weighted loss the metric reports). A record is ``{"v": [...], "w": [...], "id": ...}``
(``w`` left out when every weight is 1); ``id`` fingerprints which examples, in which order, so that two runs are
paired on a metric only when they scored the same examples (``forgetting.report``: the paired bootstrap).
"""
from __future__ import annotations

import hashlib
import json
from typing import Any, Iterable, Sequence


def fingerprint(ids: Iterable[Any]) -> str:
    """A short digest of the example identities, in order (texts, doc ids, hashes: anything JSON-serialisable)."""
    h = hashlib.sha256()
    for i in ids:
        h.update(json.dumps(i, sort_keys=True, default=str).encode() + b"\0")
    return h.hexdigest()[:16]


def record(values: Sequence[float], ids: Iterable[Any], weights: Sequence[float] | None = None) -> dict:
    """One metric's examples (see the module docstring)."""
    values = [float(v) for v in values]
    out: dict = {"v": [round(v, 7) for v in values], "id": fingerprint(ids)}
    if weights is not None and any(w != 1 for w in weights):
        if len(weights) != len(values):
            raise ValueError(f"{len(weights)} weights for {len(values)} values")
        out["w"] = [float(w) for w in weights]
    return out


def from_pairs(pairs: Sequence[tuple[float, float]], ids: Iterable[Any]) -> dict:
    """A loss's examples from (summed loss, token count) pairs: vᵢ = the row's mean loss, wᵢ = its tokens."""
    return record([s / n if n else 0.0 for s, n in pairs], ids, [n for _, n in pairs])


def estimate(rec: dict, index: Sequence[int] | None = None) -> float:
    """Σ w·v / Σ w over the examples (or over ``index``, a resample of them)."""
    v, w = rec["v"], rec.get("w")
    idx = range(len(v)) if index is None else index
    if w is None:
        return sum(v[i] for i in idx) / max(len(idx), 1)
    den = sum(w[i] for i in idx)
    return sum(w[i] * v[i] for i in idx) / den if den else 0.0
