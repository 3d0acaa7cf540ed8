"""Windowed search: each leg (image kNN, text) returns its window from Elasticsearch and the
ranking is fused, by the cluster's ``linear``/``rrf`` retriever where it has one
(retrievers.py), else here (fusion.py). page.py then collapses, diversifies and fetches a page.

Filters and excluded ids (the examples themselves) go into both legs; a similarity floor keeps
only documents the kNN leg returned above it, so it holds for the fused result too.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from elasticsearch import BadRequestError, Elasticsearch

from ..errors import SearchError
from ..index.client import es_reason
from ..index.indices import IndexInfo
from ..index.vectors import hit_vector
from ..similarity import Metric
from ..types import Fusion
from .examples import best_score
from .fusion import Leg, fuse, keep_only
from .gallery import with_photos
from .queries import knn_clause, with_excluded
from .retrievers import cluster_fuses, forget, fused_window, fusion_body
from .textquery import NAME_BOOST, default_query, field_weights, leg_query

log = logging.getLogger(__name__)


@dataclass
class Window:
    """What the windowed search ranks with: a query vector (``mean`` strategy) or positive and
    negative example vectors (``max``), text (or the shop's own query), filters, exclusions,
    floor, weights; and what happens after fusion (collapse, diversify, explain)."""

    size: int
    vector: list[float] | None = None
    positives: list[list[float]] = field(default_factory=list)
    negatives: list[list[float]] = field(default_factory=list)
    text: str | None = None
    fields: list[str] = field(default_factory=list)
    filt: dict[str, Any] = field(default_factory=dict)
    exclude: list[str] = field(default_factory=list)
    min_similarity: float | None = None
    num_candidates: int | None = None
    image_weight: float = 1.0
    text_weight: float = 1.0
    fusion: Fusion = "minmax"
    gamma: float = 0.5
    text_query: dict[str, Any] | None = None     # the shop's query, {{text}} already filled in
    collapse: str | None = None        # a doc-values field: one hit per value
    diversify: float | None = None     # MMR lambda
    explain: bool = False
    cluster: bool = True               # let the cluster fuse when it can
    name_boost: float = NAME_BOOST     # the default text leg: name/title fields over the rest

    @property
    def has_text(self) -> bool:
        return bool(self.text) or self.text_query is not None

    def text_scoring(self) -> dict[str, Any]:
        """The query that scores the text leg (without filters)."""
        if self.text_query is not None:
            return self.text_query
        return default_query(self.text or "", field_weights(self.fields, self.name_boost))


@dataclass
class Ranking:
    """A fused window: (id, score) best first, the legs it came from (client-side fusion),
    the best photo of each kNN hit on a multi-photo index, and where it was fused."""

    fused: list[tuple[str, float]]
    legs: list[Leg] = field(default_factory=list)
    inner_hits: dict[str, dict[str, Any]] = field(default_factory=dict)
    where: str = "client"
    full: bool = False                 # some leg returned its whole window: more exist


def _knn(client: Elasticsearch, info: IndexInfo, w: Window, vector: list[float],
         with_vectors: bool) -> list[dict[str, Any]]:
    body = {"size": w.size, "_source": False, "track_total_hits": False,
            "knn": with_photos(info, knn_clause(info.vector_field, vector, w.size,
                                                num_candidates=w.num_candidates, filter_query=w.filt,
                                                min_similarity=w.min_similarity, exclude_ids=w.exclude))}
    if with_vectors and not info.photos_field:  # doc values: a lean index keeps no vector in _source
        body["docvalue_fields"] = [info.vector_field]
    if with_vectors and info.photos_field:
        body["_source"] = [info.photos_field]
    hits: list[dict[str, Any]] = client.search(index=info.concrete, body=body)["hits"]["hits"]
    return hits


def image_leg(client: Elasticsearch, info: IndexInfo, w: Window, inner: dict[str, Any] | None = None) -> Leg:
    """The kNN leg: one search with the query vector, or (``max``) one per positive example,
    the union scored by best_score against all examples. ``inner`` collects each hit's best
    photo (multi-photo index)."""
    inner = {} if inner is None else inner
    if w.vector is not None:
        hits = _knn(client, info, w, w.vector, False)
        inner.update({h["_id"]: h["inner_hits"] for h in hits if h.get("inner_hits")})
        return Leg([h["_id"] for h in hits], [h["_score"] for h in hits], w.image_weight, "image")
    vectors: dict[str, list[float] | None] = {}
    for positive in w.positives:
        for h in _knn(client, info, w, positive, True):
            vectors.setdefault(h["_id"], hit_vector(h, info.vector_field))
            if h.get("inner_hits"):
                inner.setdefault(h["_id"], h["inner_hits"])
    if not vectors:
        return Leg([], [], w.image_weight, "image")
    ids = list(vectors)
    scores = best_score(np.asarray(list(vectors.values())), np.asarray(w.positives),
                        np.asarray(w.negatives), Metric(info.similarity), w.gamma)
    order = sorted(range(len(ids)), key=lambda i: (-scores[i], ids[i]))[:w.size]
    return Leg([ids[i] for i in order], [float(scores[i]) for i in order], w.image_weight, "image")


def text_leg(client: Elasticsearch, info: IndexInfo, w: Window) -> Leg:
    """The text leg over the same filters and exclusions as the kNN leg."""
    body = {"size": w.size, "_source": False, "track_total_hits": False,
            "query": leg_query(w.text_scoring(), with_excluded(w.filt, w.exclude) or None)}
    try:
        hits = client.search(index=info.concrete, body=body)["hits"]["hits"]
    except BadRequestError as exc:   # the shop's query is the likely culprit: say so
        if w.text_query is None:
            raise
        raise SearchError(f"Elasticsearch refused the text query: {es_reason(exc)}",
                          hint="check the query against this index's mapping") from None
    return Leg([h["_id"] for h in hits], [h["_score"] for h in hits], w.text_weight, "text")


def ranked(client: Elasticsearch, info: IndexInfo, w: Window) -> Ranking:
    """The fused ranking of the whole window (one leg alone: its own order and scores)."""
    refused = None
    if _cluster_can(client, info, w):
        try:
            return _cluster_ranked(client, info, w)
        except BadRequestError as exc:
            refused = exc
    ranking = _client_ranked(client, info, w)
    if refused is not None:   # the same legs fused here: it was the retriever the cluster refused
        log.warning("the cluster refused a %s fusion (%s); fusing client-side", w.fusion, refused.message)
        forget(client, info.concrete, w.fusion)
    return ranking


def _client_ranked(client: Elasticsearch, info: IndexInfo, w: Window) -> Ranking:
    legs: list[Leg] = []
    inner: dict[str, Any] = {}
    image = None
    if w.vector is not None or w.positives:
        image = image_leg(client, info, w, inner)
        legs.append(image)
    if w.has_text:
        legs.append(text_leg(client, info, w))
    out = fuse(w.fusion, legs) if len(legs) > 1 else list(zip(legs[0].ids, legs[0].scores))
    floor = set(image.ids) if image is not None and w.min_similarity is not None else None
    return Ranking(keep_only(out, floor), legs, inner, "client",
                   full=any(len(leg.ids) >= w.size for leg in legs))


def _cluster_can(client: Elasticsearch, info: IndexInfo, w: Window) -> bool:
    """Cluster fusion answers the same question only for one query vector plus text, no floor
    (kept client-side), no explanation of the legs and no photos to name; never ``adaptive``
    (its text weight is decided per query from both legs' windows: fused here, retrievers.py
    has no retriever for it)."""
    return (w.cluster and w.vector is not None and w.has_text and w.min_similarity is None
            and not w.explain and not info.photos_field
            and cluster_fuses(client, info.concrete, w.fusion))


def _cluster_ranked(client: Elasticsearch, info: IndexInfo, w: Window) -> Ranking:
    knn = knn_clause(info.vector_field, w.vector or [], w.size, num_candidates=w.num_candidates,
                     filter_query=w.filt, exclude_ids=w.exclude)
    query = leg_query(w.text_scoring(), with_excluded(w.filt, w.exclude) or None)
    body = fusion_body(w.fusion, knn, query, w.image_weight, w.text_weight, w.size)
    fused = fused_window(client.search(index=info.concrete, body=body).body)
    return Ranking(fused, where="cluster", full=len(fused) >= w.size)
