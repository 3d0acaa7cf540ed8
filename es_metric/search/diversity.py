"""Results that are not ten copies of one product, as pure functions over a ranked window.

* ``collapse``: one hit per value of a field (the best-ranked document of each value), as
  Elasticsearch's field collapsing does; used on the fused window when Elasticsearch cannot
  collapse (client-side fusion), and held to its result by a test where it can.
* ``mmr``: maximal marginal relevance (Carbonell & Goldstein, 1998): each next hit maximises
  ``lam * relevance - (1 - lam) * redundancy``, relevance the fused score scaled to [0, 1]
  over the window, redundancy its highest similarity to a hit already chosen, the similarity
  of the stored vectors scaled to [0, 1] over the window's pairs (the closest pair 1, the
  farthest 0), so both terms share a scale whatever the model or metric. ``lam = 1`` is the
  plain ranking; at 0.5 an exact copy of the top hit ties with a hit as different as the
  window allows; lower values trade relevance for variety.
"""
from __future__ import annotations

from typing import Any, Hashable, Mapping, Sequence

import numpy as np

from ..errors import SearchError, shown
from ..similarity import Metric
from .queries import FLOAT_MAX, INTEGER_BOUNDS, STRING_TYPES, TEXT_TYPES, field_info

COLLAPSIBLE = frozenset(INTEGER_BOUNDS) | frozenset(FLOAT_MAX) | (STRING_TYPES - {"wildcard"})


def collapse_field(name: str, properties: dict[str, Any]) -> str:
    """The doc-values field that collapses on ``name``: a keyword or numeric field outside
    nested objects, or a text field's keyword sub-field (what Elasticsearch can collapse on)."""
    info = field_info(name, properties)
    path = info.exact if info.type in TEXT_TYPES else info.path
    if info.nested or info.path == "_id" or not path or (info.type not in COLLAPSIBLE
                                                          and info.type not in TEXT_TYPES):
        raise SearchError(f"cannot collapse on {shown(name)} ({info.type})",
                          hint="collapse on a keyword or numeric field (a product or group id) "
                               "outside nested objects, or a text field with a keyword sub-field")
    return path


def collapse_key(doc_id: str, values: list[Any] | None, field: str) -> Hashable:
    """The one value a document collapses on (None: it has none, like Elasticsearch's null group)."""
    if not values:
        return None
    if len(values) > 1:
        raise SearchError(f"cannot collapse on {shown(field)}: document {shown(doc_id)} has "
                          f"{len(values)} values", hint="collapse on a single-valued field")
    value = values[0]
    return tuple(value) if isinstance(value, list) else value


def collapse(ranked: Sequence[tuple[str, float]], keys: Mapping[str, Hashable]) -> list[tuple[str, float]]:
    """The first (best) document of each key, in ranked order."""
    seen: set[Any] = set()
    out = []
    for doc_id, score in ranked:
        key = keys.get(doc_id)
        if key not in seen:
            seen.add(key)
            out.append((doc_id, score))
    return out


def pairwise(vectors: np.ndarray, metric: Metric) -> np.ndarray:
    """Similarity between every two vectors, in [0, 1]-ish: cosine for cosine models, the
    l2_norm score Elasticsearch gives (1 / (1 + d^2)) for L2 ones."""
    v = np.asarray(vectors, np.float64)
    if metric is Metric.COSINE:
        norm = np.linalg.norm(v, axis=1, keepdims=True)
        unit = v / np.where(norm == 0, 1.0, norm)
        return unit @ unit.T
    sq = ((v[:, None, :] - v[None, :, :]) ** 2).sum(-1)
    return 1.0 / (1.0 + sq)


def scaled(sim: np.ndarray) -> np.ndarray:
    """Pairwise similarities scaled to [0, 1] over the off-diagonal pairs."""
    if len(sim) < 2:
        return np.zeros_like(sim)
    off = sim[~np.eye(len(sim), dtype=bool)]
    lo, hi = float(off.min()), float(off.max())
    return np.clip((sim - lo) / (hi - lo), 0.0, 1.0) if hi > lo else np.ones_like(sim)


def relevance(scores: Sequence[float]) -> np.ndarray:
    """Fused scores scaled to [0, 1] over the window (a flat window: all 1)."""
    s = np.asarray(scores, np.float64)
    span = s.max() - s.min() if len(s) else 0.0
    return (s - s.min()) / span if span > 0 else np.ones_like(s)


def mmr(ranked: Sequence[tuple[str, float]], vectors: Mapping[str, Sequence[float] | None],
        lam: float, n: int, metric: Metric) -> tuple[list[tuple[str, float]], dict[str, dict[str, Any]]]:
    """The first ``n`` documents of ``ranked`` in MMR order (scores unchanged), and per chosen
    document its ``relevance``, ``redundancy`` (max similarity to those before it) and ``mmr``.
    A document without a vector is redundant with nothing."""
    ids = [d for d, _ in ranked]
    if not ids:
        return [], {}
    rel = relevance([s for _, s in ranked])
    has = np.array([vectors.get(d) is not None for d in ids])
    dims = next((len(v) for d in ids if (v := vectors.get(d)) is not None), 1)
    mat = np.stack([np.asarray(vectors[d], np.float64) if vectors.get(d) is not None
                    else np.zeros(dims) for d in ids])
    sim = np.where(has[:, None] & has[None, :], scaled(pairwise(mat, metric)), 0.0)
    redundancy = np.full(len(ids), -np.inf)
    left = np.ones(len(ids), bool)
    out, why = [], {}
    for _ in range(min(n, len(ids))):
        red = np.where(np.isfinite(redundancy), redundancy, 0.0)
        score = np.where(left, lam * rel - (1 - lam) * red, -np.inf)
        i = int(np.argmax(score))  # ties: the better-ranked document (argmax takes the first)
        out.append(ranked[i])
        why[ids[i]] = {"relevance": round(float(rel[i]), 6), "redundancy": round(float(red[i]), 6),
                       "mmr": round(float(score[i]), 6)}
        left[i] = False
        redundancy = np.maximum(redundancy, sim[i])
    return out, why
