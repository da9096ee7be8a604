"""How sure a number is: 95% intervals over seeds and over examples, and paired differences between methods.

    python -m forgetting.report outputs/multirun/...      # the report's ± cells and its "Paired differences" section
    pytest tests/test_intervals.py

Two sources of uncertainty, kept apart because they answer different questions:
- **over seeds** (training randomness, the test set fixed): the t interval of the per-seed values, mean ± t₀.₉₇₅,ₙ₋₁ ·
  s/√n; for a paired difference, of the per-seed differences between two methods run with the same seed and the
  same everything else (the pairing removes what the seed does to both);
- **over examples** (a finite test set): a percentile bootstrap that resamples the evaluated examples
  (``forgetting.evaluate.examples``: documents, test questions, samples) with replacement, the metric recomputed as
  the ratio it is (Σ w·v / Σ w); with several seeds the same resample is applied to every seed and the seeds'
  estimates averaged. Paired: each resample is applied to both methods, so an example that is hard for both does not
  widen the difference's interval. One seed already gets this interval.
Only runs that scored the same examples (the same fingerprint) are resampled together.
"""
from __future__ import annotations

import math
import statistics
from typing import Callable, Optional, Sequence

LEVEL = 0.95
BOOTSTRAP = 2000  # resamples: the percentile interval's ends move by ~1% of its width between seeds of the resampler


def t_quantile(df: int, level: float = LEVEL) -> float:
    from scipy.stats import t

    return float(t.ppf(0.5 + level / 2, df))


def seed_interval(values: Sequence[float], level: float = LEVEL) -> Optional[tuple[float, float]]:
    """The t interval of the mean of ``values`` (one per seed); None with fewer than 2."""
    n = len(values)
    if n < 2:
        return None
    mean, sd = statistics.mean(values), statistics.stdev(values)
    half = t_quantile(n - 1, level) * sd / math.sqrt(n)
    return mean - half, mean + half


def _matrix(records: Sequence[dict]):
    import numpy as np

    v = np.array([r["v"] for r in records], dtype=float)  # seeds × examples
    w = np.array([r.get("w") or [1.0] * len(r["v"]) for r in records], dtype=float)
    return v, w


def _resampled(v, w, idx):
    """Per resample (rows of ``idx``): the mean over seeds of each seed's ratio estimate on those examples."""
    num = (w[:, idx] * v[:, idx]).sum(axis=2)  # seeds × resamples
    den = w[:, idx].sum(axis=2)
    return (num / den).mean(axis=0)


def comparable(records: Sequence[dict]) -> bool:
    """Whether the records scored the same examples, in the same order (their fingerprints agree)."""
    return bool(records) and len({(r["id"], len(r["v"])) for r in records}) == 1


def example_interval(records: Sequence[dict], iters: int = BOOTSTRAP, seed: int = 0,
                     level: float = LEVEL) -> Optional[tuple[float, float]]:
    """The bootstrap interval over examples of the metric's mean over seeds (``records``: one per seed)."""
    if not comparable(records) or len(records[0]["v"]) < 2:
        return None
    import numpy as np

    v, w = _matrix(records)
    idx = np.random.default_rng(seed).integers(0, v.shape[1], size=(iters, v.shape[1]))
    stats = _resampled(v, w, idx)
    return float(np.quantile(stats, (1 - level) / 2)), float(np.quantile(stats, (1 + level) / 2))


def paired_example_interval(a: Sequence[dict], b: Sequence[dict], iters: int = BOOTSTRAP, seed: int = 0,
                            level: float = LEVEL) -> Optional[tuple[float, float]]:
    """The bootstrap interval over examples of mean(a) − mean(b), the same resample applied to both (``a[s]`` and
    ``b[s]``: the two methods' records of seed s)."""
    if len(a) != len(b) or not comparable([*a, *b]) or len(a[0]["v"]) < 2:
        return None
    import numpy as np

    va, wa = _matrix(a)
    vb, wb = _matrix(b)
    idx = np.random.default_rng(seed).integers(0, va.shape[1], size=(iters, va.shape[1]))
    diff = _resampled(va, wa, idx) - _resampled(vb, wb, idx)
    return float(np.quantile(diff, (1 - level) / 2)), float(np.quantile(diff, (1 + level) / 2))


def excludes_zero(interval: Optional[tuple[float, float]]) -> bool:
    return interval is not None and (interval[0] > 0 or interval[1] < 0)


def match_key(run: dict, varies: str = "method") -> tuple:
    """What a run shares with its paired reference: its seed and every override but the ones the comparison is about
    and its row label (``label=…``). ``varies``: an override key, with its sub-keys (by default the method and its
    knobs, ``method=…``, ``method.…=…``, so that CFS at lr 1e-4, seed 1 pairs with FT at lr 1e-4, seed 1), or
    ``"base"``: every override the run's ``base_label`` lists (``pretrain=sam, model.pretrain.rho=0.1``)."""
    def key(o: str) -> str:
        return o.split("=", 1)[0]

    def compared(o: str) -> bool:
        if varies == "base":
            return o in _base_items(run)
        return key(o) == varies or key(o).startswith(varies + ".")

    others = sorted(o for o in _overrides(run) if key(o) not in ("label", "seed") and not compared(o))
    return run.get("seed"), tuple(others)


def reference_of(runs: Sequence[dict], reference: str) -> Optional[tuple[Callable[[dict], bool], str]]:
    """(which runs are the reference, what the comparison varies: :func:`match_key`) for ``reference``: a method
    (``ft``) or a row label (``FT``; the method varies), else an override some run carries — one its base is built
    with (``pretrain=adamw``, ``model.midtrain.rho=0.0``: the whole base varies, so a base of two overrides such as
    ``pretrain=sam, model.pretrain.rho=0.1`` pairs with it too) or any other (its key varies); everything else, the
    method too, is matched. None if it names nothing in ``runs``."""
    if any(r.get("method") == reference or r["label"] == reference for r in runs):
        return (lambda r: r.get("method") == reference or r["label"] == reference), "method"
    carriers = [r for r in runs if reference in _overrides(r)]
    if "=" not in reference or not carriers:
        return None
    varies = "base" if all(reference in _base_items(r) for r in carriers) else reference.split("=", 1)[0]
    return (lambda r: reference in _overrides(r)), varies


def _overrides(run: dict) -> list[str]:
    return [o.lstrip("+~") for o in run.get("overrides", [])]


def _base_items(run: dict) -> list[str]:
    return [item.strip() for item in (run.get("base_label") or "").split(",") if "=" in item]


def pair_runs(runs: Sequence[dict], reference: str) -> dict[str, list[tuple[dict, dict]]]:
    """label → [(run, its reference run)] for every other run that has exactly one reference run with the same
    :func:`match_key`; ``reference`` (:func:`reference_of`) is a method name (``ft``: FT at every lr of a sweep,
    each paired with the runs at its own lr), a row label, or an override (``pretrain=adamw``: every base paired with
    the AdamW base's run of the same method, lr and seed)."""
    found = reference_of(runs, reference)
    if found is None:
        return {}
    is_ref, varies = found
    refs: dict[tuple, list[dict]] = {}
    for r in runs:
        if is_ref(r):
            refs.setdefault(match_key(r, varies), []).append(r)
    out: dict[str, list[tuple[dict, dict]]] = {}
    for r in runs:
        if is_ref(r):
            continue
        matched = refs.get(match_key(r, varies), [])
        if len(matched) == 1:
            out.setdefault(r["label"], []).append((r, matched[0]))
    return out


def paired_difference(pairs: Sequence[tuple[dict, dict]], metric: str) -> Optional[dict]:
    """{"n", "mean", "seeds": interval | None, "examples": interval | None} of run − reference on ``metric``, over
    the pairs that both report it."""
    both = [(r, f) for r, f in pairs if metric in r["metrics"] and metric in f["metrics"]]
    if not both:
        return None
    diffs = [float(r["metrics"][metric]) - float(f["metrics"][metric]) for r, f in both]
    a = [r.get("examples", {}).get(metric) for r, _ in both]
    b = [f.get("examples", {}).get(metric) for _, f in both]
    examples = paired_example_interval(a, b) if all(a) and all(b) else None
    return {"n": len(both), "mean": statistics.mean(diffs), "seeds": seed_interval(diffs), "examples": examples}
