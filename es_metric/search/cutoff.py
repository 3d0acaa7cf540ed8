"""A search's similarity floor: a number, ``auto`` (the cut-off calibrated on the model card for a
precision target, training/calibrate.py), or the card's near-duplicate threshold; and how many
of the image matches it cut.

Units are Elasticsearch's kNN ``similarity``: cosine similarity for cosine models (keep at
least it), L2 distance for l2_norm models (keep at most it).
"""
from __future__ import annotations

import math
from typing import Any, Mapping

from elasticsearch import Elasticsearch

from ..errors import SearchError, shown
from ..index.indices import IndexInfo
from ..model.card import card_cutoff
from .queries import knn_clause

__all__ = ["AUTO", "auto_cutoff", "count_cut", "cut_body", "parse_min_similarity", "score_similarity"]

AUTO = "auto"
MinSimilarity = float | str | None   # a number, AUTO, or None (no floor)


def parse_min_similarity(value: object, name: str = "min_similarity") -> MinSimilarity:
    """None, ``"auto"``, or a finite number (strings from the CLI or HTTP too)."""
    if value is None or (isinstance(value, str) and value.strip().lower() == AUTO):
        return None if value is None else AUTO
    if isinstance(value, bool):
        raise _bad(value, name)
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise _bad(value, name) from None
    if not math.isfinite(number):
        raise _bad(value, name)
    return number


def _bad(value: object, name: str) -> SearchError:
    return SearchError(f"{name} must be a finite number, not {shown(value)}",
                       hint="or auto: the threshold calibrated on the model card", field=name)


def auto_cutoff(card: Mapping[str, Any], model_id: str) -> float:
    """The card's calibrated cut-off (``metrics.cutoff.similarity``); a clear error without one."""
    value = card_cutoff(card)
    if value is None:
        raise SearchError(f"model {model_id} has no calibrated cut-off for --min-similarity auto",
                          hint="retrain it with `esm train` (this version calibrates one), "
                               "or give a number: --min-similarity S")
    return float(value)


def score_similarity(score: float, similarity: str) -> float:
    """Elasticsearch's kNN ``_score`` back in ``similarity`` units: (1 + cos) / 2 for cosine and
    dot_product, 1 / (1 + d²) for l2_norm (d: the distance)."""
    if similarity == "l2_norm":
        return math.sqrt(max(1.0 / max(score, 1e-30) - 1.0, 0.0))
    return 2.0 * score - 1.0


def below(value: float, floor: float, similarity: str) -> bool:
    """Whether a match at ``value`` falls on the wrong side of ``floor``."""
    return value > floor if similarity == "l2_norm" else value < floor


def cut_body(info: IndexInfo, vector: list[float], window: int, *, num_candidates: int | None,
             filter_query: dict[str, Any] | None, exclude_ids: list[str] | None) -> dict[str, Any]:
    """The image leg's first ``window`` matches without the floor: ids and scores only."""
    return {"size": window, "_source": False, "track_total_hits": False,
            "knn": knn_clause(info.vector_field, vector, window, num_candidates=num_candidates,
                              filter_query=filter_query, exclude_ids=exclude_ids)}


def count_cut(client: Elasticsearch, info: IndexInfo, vectors: list[list[float]], window: int,
              floor: float, *, num_candidates: int | None = None, filter_query: dict[str, Any] | None = None,
              exclude_ids: list[str] | None = None) -> int:
    """How many of the first ``window`` (page x k) image matches the floor removed: one kNN per
    query vector without the floor (several: the ``max`` strategy, a match kept when any keeps
    it). Bounded by the window, never by the index."""
    seen: dict[str, bool] = {}
    for vector in vectors:
        body = cut_body(info, vector, window, num_candidates=num_candidates,
                        filter_query=filter_query, exclude_ids=exclude_ids)
        for hit in client.search(index=info.concrete, body=body)["hits"]["hits"]:
            cut = below(score_similarity(hit["_score"], info.similarity), floor, info.similarity)
            seen[hit["_id"]] = seen.get(hit["_id"], True) and cut
    return sum(seen.values())
