"""Windowed search: each leg (image kNN, text) returns its window from Elasticsearch, the
ranking is fused here (fusion.py), and one last request fetches the page's documents with
their highlights and the facets of the whole fused result.

Filters and excluded ids (the examples themselves) go into both legs; a similarity floor keeps
only documents the kNN leg returned above it, so it holds for the fused result too.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from elasticsearch import Elasticsearch

from ..index.indices import IndexInfo
from ..index.vectors import hit_vector
from ..similarity import Metric
from .examples import best_score
from .fusion import Leg, fuse, keep_only
from .queries import with_excluded, knn_clause, raw_vector_field, text_query


@dataclass
class Window:
    """What the windowed search ranks with: a query vector (``mean`` strategy) or positive and
    negative example vectors (``max``), text, filters, exclusions, floor, weights."""

    size: int
    vector: list[float] | None = None
    positives: list[list[float]] = field(default_factory=list)
    negatives: list[list[float]] = field(default_factory=list)
    text: str | None = None
    fields: list[str] = field(default_factory=list)
    filt: dict = field(default_factory=dict)
    exclude: list[str] = field(default_factory=list)
    min_similarity: float | None = None
    num_candidates: int | None = None
    image_weight: float = 1.0
    text_weight: float = 1.0
    fusion: str = "minmax"
    gamma: float = 0.5


def _knn(client: Elasticsearch, info: IndexInfo, w: Window, vector, with_vectors: bool) -> list[dict]:
    body = {"size": w.size, "_source": False, "track_total_hits": False,
            "knn": knn_clause(info.vector_field, vector, w.size, num_candidates=w.num_candidates,
                              filter_query=w.filt, min_similarity=w.min_similarity,
                              exclude_ids=w.exclude)}
    if with_vectors:  # from doc values: a lean index keeps no vector in _source
        body["docvalue_fields"] = [info.vector_field]
    return client.search(index=info.concrete, body=body)["hits"]["hits"]


def image_leg(client: Elasticsearch, info: IndexInfo, w: Window) -> Leg:
    """The kNN leg: one search with the query vector, or (``max``) one per positive example,
    the union scored by best_score against all examples."""
    if w.vector is not None:
        hits = _knn(client, info, w, w.vector, False)
        return Leg([h["_id"] for h in hits], [h["_score"] for h in hits], w.image_weight)
    vectors: dict[str, list[float]] = {}
    for positive in w.positives:
        for h in _knn(client, info, w, positive, True):
            vectors.setdefault(h["_id"], hit_vector(h, info.vector_field))
    if not vectors:
        return Leg([], [], w.image_weight)
    ids = list(vectors)
    scores = best_score(np.asarray(list(vectors.values())), np.asarray(w.positives),
                        np.asarray(w.negatives), Metric(info.similarity), w.gamma)
    order = sorted(range(len(ids)), key=lambda i: (-scores[i], ids[i]))[:w.size]
    return Leg([ids[i] for i in order], [float(scores[i]) for i in order], w.image_weight)


def text_leg(client: Elasticsearch, info: IndexInfo, w: Window) -> Leg:
    """The text leg over the same filters and exclusions as the kNN leg."""
    body = {"size": w.size, "_source": False, "track_total_hits": False,
            "query": text_query(w.text, w.fields, with_excluded(w.filt, w.exclude) or None)}
    hits = client.search(index=info.concrete, body=body)["hits"]["hits"]
    return Leg([h["_id"] for h in hits], [h["_score"] for h in hits], w.text_weight)


def ranked(client: Elasticsearch, info: IndexInfo, w: Window) -> list[tuple[str, float]]:
    """The fused ranking of the whole window (one leg alone: its own order and scores)."""
    legs = []
    image = None
    if w.vector is not None or w.positives:
        image = image_leg(client, info, w)
        legs.append(image)
    if w.text:
        legs.append(text_leg(client, info, w))
    out = fuse(w.fusion, legs) if len(legs) > 1 else list(zip(legs[0].ids, legs[0].scores))
    floor = set(image.ids) if image is not None and w.min_similarity is not None else None
    return keep_only(out, floor)


def page_body(info: IndexInfo, w: Window, all_ids: list[str], page_ids: list[str],
              aggs: dict | None) -> dict:
    """The last request: the page's documents (with highlights when there is text), and the
    facets over every fused document (post_filter narrows the hits, not the aggregations)."""
    query: dict = {"bool": {"filter": [{"ids": {"values": all_ids}}]}}
    if w.text:
        query["bool"]["should"] = [text_query(w.text, w.fields)]
    body: dict = {"size": len(page_ids), "track_total_hits": False, "query": query,
                  "post_filter": {"ids": {"values": page_ids}},
                  "_source": {"excludes": [info.vector_field, raw_vector_field(info.vector_field)]}}
    if w.text:
        body["highlight"] = {"fields": {f: {} for f in w.fields}, "require_field_match": True}
    if aggs:
        body["aggs"] = aggs
    return body


def windowed_search(client: Elasticsearch, info: IndexInfo, w: Window, offset: int, k: int,
                    aggs: dict | None) -> tuple[list[dict], dict]:
    """Hits of one page, in fused order with fused scores, and the raw aggregations."""
    fused = ranked(client, info, w)
    page = fused[offset:offset + k]
    if not page and not aggs:
        return [], {}
    body = page_body(info, w, [d for d, _ in fused], [d for d, _ in page], aggs)
    resp = client.search(index=info.concrete, body=body)
    docs = {h["_id"]: h for h in resp["hits"]["hits"]}
    hits = [dict(docs[d], _score=s) for d, s in page if d in docs]
    return hits, resp.get("aggregations") or {}
