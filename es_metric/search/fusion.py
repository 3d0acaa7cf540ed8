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
  unnormalised, kept for compatibility and measured in bench/hybrid.py;
* ``adaptive`` (the default): ``minmax`` with the text leg's weight set per query by how far
  the two legs agree: the share of the image leg's best ``AGREE_TOP`` hits that the text leg's
  window holds. Below ``AGREE_LOW`` the text weighs nothing (the photo rejects what the text
  finds: a misleading text), from ``AGREE_HIGH`` it weighs ``AGREE_BOOST`` times its weight,
  linear between.
  Computed from the two windows a search fetches anyway, so always fused here, never by the
  cluster.

Ties break by the best rank any leg gave a document, then by id, so pages are reproducible.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from ..types import Fusion

ADAPTIVE: Fusion = "adaptive"
FUSIONS: tuple[Fusion, ...] = (ADAPTIVE, "minmax", "zscore", "rrf", "weighted")
# BENCHMARKS.md 7c (bench/hybrid_eval.py, three class-disjoint Grocery folds, nDCG@10 gain on
# right text over image only / cost of misleading text): fixed minmax 0.8:0.2 +0.023 / 0.004 on
# shoppers' photos, +0.061 / 0.014 on catalogue packshots, +0.180 / 0.019 with a noise-degraded
# image leg; adaptive +0.025 / 0.002, +0.079 / 0.009, +0.230 / 0.008. At 1:1 a misleading text
# drowns the image; the agreement gate lets text weigh more where the photo agrees with it.
DEFAULT_FUSION: Fusion = ADAPTIVE
DEFAULT_IMAGE_WEIGHT = 0.8
DEFAULT_TEXT_WEIGHT = 0.2
AGREE_TOP = 20                  # the image leg's best hits the agreement looks at
AGREE_LOW, AGREE_HIGH = 0.1, 0.3
AGREE_BOOST = 1.75              # agreeing text weighs up to 1.75x its weight: 0.8:0.35 at the defaults
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
    """Each document's best rank in a leg that weighs something (a leg at weight 0, e.g. text
    the agreement gate turned off, must not lift its documents over the other leg's ties)."""
    best: dict[str, int] = {}
    for leg in [leg for leg in legs if leg.weight > 0] or legs:
        for rank, doc_id in enumerate(leg.ids, 1):
            best[doc_id] = min(best.get(doc_id, rank), rank)
    return best


def _ranked(scores: dict[str, float], legs: Sequence[Leg]) -> list[tuple[str, float]]:
    best = _best_ranks(legs)
    return sorted(scores.items(), key=lambda kv: (-kv[1], best.get(kv[0], math.inf), kv[0]))


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


def agreement(image: Leg, text: Leg, top: int = AGREE_TOP) -> float:
    """The share of the image leg's ``top`` best hits that the text leg's window also holds:
    1 when the photo's best matches all say the words, 0 when none does (or a leg is empty)."""
    best, said = list(image.ids[:top]), set(text.ids)
    return sum(d in said for d in best) / len(best) if best and said else 0.0


def text_share(agree: float, low: float = AGREE_LOW, high: float = AGREE_HIGH) -> float:
    """The share of its weight the text leg keeps at agreement ``agree``: 0 below ``low``, 1
    from ``high``, linear between (a gate when ``low == high``)."""
    if agree >= high:
        return 1.0
    return 0.0 if agree < low or high <= low else (agree - low) / (high - low)


def adapted(legs: Sequence[Leg], boost: float = AGREE_BOOST) -> tuple[list[Leg], dict[str, float] | None]:
    """``legs`` with the text leg's weight times ``boost`` x ``text_share`` of the legs' agreement, and
    what was decided (agreement, the weight asked and the weight used); legs other than one
    ``image`` and one ``text`` leg are returned as they are, with None."""
    named = {leg.name: leg for leg in legs}
    if len(legs) != 2 or set(named) != {"image", "text"}:
        return list(legs), None
    agree = agreement(named["image"], named["text"])
    text = named["text"]
    used = text.weight * boost * text_share(agree)
    out = [leg if leg is not text else Leg(text.ids, text.scores, used, text.name) for leg in legs]
    return out, {"agreement": agree, "text_weight_asked": text.weight, "text_weight": used}


def _resolved(method: Fusion, legs: Sequence[Leg]) -> tuple[Fusion, Sequence[Leg], dict[str, float] | None]:
    """``adaptive`` as the ``minmax`` it is, over the adapted legs."""
    _check(method)
    if method != ADAPTIVE:
        return method, legs, None
    out, decided = adapted(legs)
    return "minmax", out, decided


def fuse(method: Fusion, legs: Sequence[Leg], rrf_k: float = RRF_K) -> list[tuple[str, float]]:
    """One ranking from ``legs`` by ``method`` (one of FUSIONS), best first: the weighted sum
    of each leg's ``parts`` over the union of the windows."""
    method, legs, _ = _resolved(method, legs)
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
    fused score sums; ``fused`` is that sum (what ``fuse`` ranks by). ``adaptive`` adds what
    it decided (``agreement``, ``text_weight_asked``, ``text_weight``) to every document."""
    method, legs, decided = _resolved(method, legs)
    out: dict[str, dict[str, Any]] = {d: {"legs": {}, "fused": 0.0} for leg in legs for d in leg.ids}
    if decided is not None:
        for entry in out.values():
            entry["adaptive"] = dict(decided)
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
