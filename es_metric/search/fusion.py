"""Fusion of an image (kNN) ranking and a text (BM25) ranking into one, as pure functions.

A leg is what one retriever returned over its window: ids best first with their scores. BM25
is unbounded and the kNN ``_score`` lies in [0, 1], so a plain sum lets a few repeated words
drown a near-identical image. The methods:

* ``minmax``: each leg's scores scaled to [0, 1] over its own window, then a weighted sum; a
  document one leg did not return gets 0 from it (the floor of that window). Elasticsearch's
  ``linear`` retriever with the ``minmax`` normalizer, computed here;
* ``zscore``: each leg standardised over its window ((s - mean) / std), a document a leg did
  not return gets the window's lowest standardised score;
* ``rrf``: weighted reciprocal rank fusion, ``sum w / (k + rank)``, ranks from 1;
* ``weighted``: the weighted sum of raw scores (what ``query`` + ``knn`` with boosts does);
  unnormalised, kept for compatibility and measured in bench/hybrid.py.

Ties break by the best rank any leg gave a document, then by id, so pages are reproducible.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from ..types import Fusion

FUSIONS: tuple[Fusion, ...] = ("minmax", "zscore", "rrf", "weighted")
# bench/hybrid.py's weight sweep on the Grocery Store (README "Hybrid search"): minmax at 4:1
# has the best nDCG@10 (0.936; image only 0.929, text only 0.285); at 1:1 text still drowns the
# image whenever it misleads (0.426)
DEFAULT_FUSION: Fusion = "minmax"
DEFAULT_IMAGE_WEIGHT = 0.8
DEFAULT_TEXT_WEIGHT = 0.2
DEFAULT_WINDOW = 100           # each leg's window: max(DEFAULT_WINDOW, k * page)
RRF_K = 60.0


@dataclass(frozen=True)
class Leg:
    """One retriever's window: ``ids`` best first, ``scores`` aligned, ``weight`` >= 0,
    ``name`` (image, text) for explanations."""

    ids: Sequence[str]
    scores: Sequence[float]
    weight: float = 1.0
    name: str = ""


def window(k: int, page: int, base: int = DEFAULT_WINDOW) -> int:
    """How many results each leg returns: the same for every page while ``k * page <= base``,
    so pages 1 and 2 together are the top 2k of one fused ranking."""
    return max(base, k * page)


def scaler(scores: Sequence[float], method: str) -> tuple[Callable[[float], float], float]:
    """The normalisation ``method`` fitted on one window's scores, and the value a document
    missing from the window gets. A flat window (one document, or all equal) scales to 1 and
    a missing document to 0, for both: nothing in the window is worse than the rest."""
    s = [float(x) for x in scores]
    if method == "weighted" or not s:
        return (lambda x: x), 0.0
    if method not in ("minmax", "zscore"):
        raise ValueError(f"unknown normaliser {method!r}")
    lo, hi = min(s), max(s)
    if hi == lo:
        return (lambda x: 1.0), 0.0
    if method == "minmax":
        return (lambda x: (x - lo) / (hi - lo)), 0.0
    mean = sum(s) / len(s)
    std = math.sqrt(sum((x - mean) ** 2 for x in s) / len(s))
    return (lambda x: (x - mean) / std), (lo - mean) / std


def _best_ranks(legs: Sequence[Leg]) -> dict[str, int]:
    best: dict[str, int] = {}
    for leg in legs:
        for rank, doc_id in enumerate(leg.ids, 1):
            best[doc_id] = min(best.get(doc_id, rank), rank)
    return best


def _ranked(scores: dict[str, float], legs: Sequence[Leg]) -> list[tuple[str, float]]:
    best = _best_ranks(legs)
    return sorted(scores.items(), key=lambda kv: (-kv[1], best[kv[0]], kv[0]))


def parts(method: Fusion, leg: Leg, rrf_k: float = RRF_K) -> tuple[dict[str, float], float]:
    """What ``method`` makes of one leg before weighting: each document's normalised score
    (rrf: ``1 / (k + rank)``), and the value of a document the leg did not return."""
    if method == "rrf":
        return {d: 1.0 / (rrf_k + rank) for rank, d in enumerate(leg.ids, 1)}, 0.0
    f, missing = scaler(leg.scores, method)
    return {d: f(s) for d, s in zip(leg.ids, leg.scores)}, missing


def _check(method: str) -> None:
    if method not in FUSIONS:
        raise ValueError(f"unknown fusion {method!r}; use one of {', '.join(FUSIONS)}")


def fuse(method: Fusion, legs: Sequence[Leg], rrf_k: float = RRF_K) -> list[tuple[str, float]]:
    """One ranking from ``legs`` by ``method`` (one of FUSIONS), best first: the weighted sum
    of each leg's ``parts`` over the union of the windows."""
    _check(method)
    members = {d for leg in legs for d in leg.ids}
    scores = dict.fromkeys(members, 0.0)
    for leg in legs:
        known, missing = parts(method, leg, rrf_k)
        for doc_id in members:
            scores[doc_id] += leg.weight * known.get(doc_id, missing)
    return _ranked(scores, legs)


def explain(method: Fusion, legs: Sequence[Leg], rrf_k: float = RRF_K) -> dict[str, dict[str, Any]]:
    """Per document, per leg (by ``Leg.name``): its raw score and rank in that leg (None when
    the leg did not return it), the normalised score, the weight and the weighted part the
    fused score sums; ``fused`` is that sum (what ``fuse`` ranks by)."""
    _check(method)
    out: dict[str, dict[str, Any]] = {d: {"legs": {}, "fused": 0.0} for leg in legs for d in leg.ids}
    for leg in legs:
        known, missing = parts(method, leg, rrf_k)
        where = {d: (rank, s) for rank, (d, s) in enumerate(zip(leg.ids, leg.scores), 1)}
        for doc_id, entry in out.items():
            rank, raw = where.get(doc_id, (None, None))
            norm = known.get(doc_id, missing)
            entry["legs"][leg.name] = {"score": raw, "rank": rank, "normalised": norm,
                                       "weight": leg.weight, "contribution": leg.weight * norm}
            entry["fused"] += leg.weight * norm
    return out


def keep_only(ranked: list[tuple[str, float]], allowed: set[str] | None) -> list[tuple[str, float]]:
    """The fused ranking restricted to ``allowed`` ids (None: all): a similarity floor keeps
    only documents the kNN leg returned above it."""
    return ranked if allowed is None else [(d, s) for d, s in ranked if d in allowed]
