"""After fusion: one hit per product (collapse), variety (MMR), the page, its documents.

The fused window is collapsed on the field's doc values (read for the window's documents in one
request); when it holds fewer groups than the page needs and a leg was cut at its window, the
window grows (x4, at most 10,000) and is ranked again, so k groups come back when they exist.
MMR reorders the best ``window(k, page)`` candidates with their stored vectors. The last request
fetches the page's documents with highlights and the facets of the whole fused window.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any

from elasticsearch import Elasticsearch

from ..index.indices import IndexInfo
from ..index.vectors import hit_vector, raw_vector_field
from ..similarity import Metric
from .diversity import collapse, collapse_key, mmr
from .fusion import Leg, explain, window
from .gallery import combine, with_photos
from .hybrid import Ranking, Window, ranked
from .queries import knn_clause, search_body

MAX_WINDOW = 10_000
GROW = 4


def knn_page(client: Elasticsearch, info: IndexInfo, w: Window, offset: int,
             k: int) -> tuple[list[dict[str, Any]], int]:
    """An image-only page in one kNN search, paged by Elasticsearch; with ``collapse``,
    Elasticsearch's own field collapsing over a kNN window grown until it holds the page."""
    size = max(w.size, offset + k) if w.collapse else offset + k
    while True:
        knn = with_photos(info, knn_clause(info.vector_field, w.vector or [], size,
                                           num_candidates=w.num_candidates, filter_query=w.filt,
                                           min_similarity=w.min_similarity, exclude_ids=w.exclude))
        body = search_body(knn=knn, size=k, offset=offset, vector_field=info.vector_field)
        if w.collapse:
            body.update(collapse={"field": w.collapse}, track_total_hits=True)
        resp = client.search(index=info.concrete, body=body)
        hits = resp["hits"]["hits"]
        matched = ((resp["hits"].get("total") or {}).get("value") or 0) if w.collapse else 0
        if not w.collapse or len(hits) >= k or size >= MAX_WINDOW or matched < size:
            return hits, resp["took"]
        size = min(MAX_WINDOW, size * GROW)


def details_body(info: IndexInfo, ids: list[str], collapse_field: str | None, vectors: bool) -> dict[str, Any]:
    """The window's collapse values and vectors (doc values; a multi-photo index's photos
    from ``_source``)."""
    fields = [collapse_field] if collapse_field else []
    photos = vectors and bool(info.photos_field)
    if vectors and not photos:
        fields.append(info.vector_field)
    return {"size": len(ids), "track_total_hits": False, "query": {"ids": {"values": ids}},
            "_source": [info.photos_field] if photos else False, "docvalue_fields": fields}


def read_details(client: Elasticsearch, info: IndexInfo, ids: list[str], collapse_field: str | None,
                 vectors: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """({id: collapse key}, {id: vector or None}) of ``ids``."""
    if not ids:
        return {}, {}
    hits = client.search(index=info.concrete, body=details_body(info, ids, collapse_field, vectors))["hits"]["hits"]
    keys = {h["_id"]: collapse_key(h["_id"], (h.get("fields") or {}).get(collapse_field), collapse_field)
            for h in hits} if collapse_field else {}
    vecs = {h["_id"]: _vector(info, h) for h in hits} if vectors else {}
    return keys, vecs


def _vector(info: IndexInfo, hit: dict[str, Any]) -> list[float] | None:
    if not info.photos_field:
        return hit_vector(hit, info.vector_field)
    photos = info.fields.layout.photo_vectors(hit.get("_source"))
    return combine(photos, info.similarity) if photos else None


def grown(client: Elasticsearch, info: IndexInfo, w: Window, need: int) -> tuple[Ranking, dict[str, Any], Window]:
    """The fused window, grown until its collapse holds ``need`` groups (or nothing more exists)."""
    while True:
        ranking = ranked(client, info, w)
        keys = read_details(client, info, [d for d, _ in ranking.fused], w.collapse, False)[0] \
            if w.collapse else {}
        if (not w.collapse or w.size >= MAX_WINDOW or not ranking.full
                or len(collapse(ranking.fused, keys)) >= need):
            return ranking, keys, w
        w = replace(w, size=min(MAX_WINDOW, w.size * GROW))


def arrange(client: Elasticsearch, info: IndexInfo, w: Window, ranking: Ranking, keys: dict[str, Any],
            need: int, page_k: tuple[int, int]) -> tuple[list[tuple[str, float]], dict[str, Any]]:
    """The window in the order the page is cut from: collapsed, then MMR over its best
    ``window(k, page)``; and MMR's reasons per document."""
    ordered = collapse(ranking.fused, keys) if w.collapse else ranking.fused
    if w.diversify is None:
        return ordered, {}
    pool = ordered[:window(*page_k)]
    vectors = read_details(client, info, [d for d, _ in pool], None, True)[1]
    return mmr(pool, vectors, w.diversify, need, Metric(info.similarity))


def page_body(info: IndexInfo, w: Window, all_ids: list[str], page_ids: list[str],
              aggs: dict[str, Any] | None) -> dict[str, Any]:
    """The last request: the page's documents (with highlights when there is text), and the
    facets over every fused document (post_filter narrows the hits, not the aggregations)."""
    query: dict[str, Any] = {"bool": {"filter": [{"ids": {"values": all_ids}}]}}
    if w.has_text:
        query["bool"]["should"] = [w.text_scoring()]
    body: dict[str, Any] = {"size": len(page_ids), "track_total_hits": False, "query": query,
                  "post_filter": {"ids": {"values": page_ids}},
                  "_source": {"excludes": [info.vector_field, raw_vector_field(info.vector_field)]}}
    if w.has_text and w.fields:
        body["highlight"] = {"fields": {f: {} for f in w.fields}, "require_field_match": True}
    if aggs:
        body["aggs"] = aggs
    return body


def windowed_search(client: Elasticsearch, info: IndexInfo, w: Window, offset: int, k: int,
                    aggs: dict[str, Any] | None) -> tuple[list[dict[str, Any]], dict[str, Any], Ranking]:
    """Hits of one page, in fused (collapsed, diversified) order with fused scores, the raw
    aggregations, and the ranking they came from."""
    need = offset + k
    ranking, keys, w = grown(client, info, w, need)
    ordered, why = arrange(client, info, w, ranking, keys, need, (k, offset // k + 1))
    page = ordered[offset:need]
    if not page and not aggs:
        return [], {}, ranking
    body = page_body(info, w, [d for d, _ in ranking.fused], [d for d, _ in page], aggs)
    resp = client.search(index=info.concrete, body=body)
    docs = {h["_id"]: h for h in resp["hits"]["hits"]}
    reasons = explanations(w, ranking, [d for d, _ in page], why) if w.explain else {}
    hits = []
    for doc_id, score in page:
        if doc_id in docs:
            hit = dict(docs[doc_id], _score=score)
            if doc_id in ranking.inner_hits:
                hit["inner_hits"] = ranking.inner_hits[doc_id]
            if doc_id in reasons:
                hit["_explain"] = reasons[doc_id]
            hits.append(hit)
    return hits, resp.get("aggregations") or {}, ranking


def explanations(w: Window, ranking: Ranking, ids: list[str], why: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per document: each leg's raw score, rank, normalised score, weight and part of the fused
    score (one leg: its raw score is the score), and MMR's relevance and redundancy."""
    legs = ranking.legs
    if len(legs) > 1:
        parts = explain(w.fusion, legs)
    else:
        parts = {d: {"legs": {leg.name: _alone(leg, rank, s)}, "fused": s}
                 for leg in legs for rank, (d, s) in enumerate(zip(leg.ids, leg.scores), 1)}
    out = {}
    for doc_id in ids:
        entry = dict(parts.get(doc_id) or {"legs": {}, "fused": None})
        entry["fusion"] = w.fusion if len(legs) > 1 else None
        if doc_id in why:
            entry["mmr"] = dict(why[doc_id], **{"lambda": w.diversify})
        out[doc_id] = entry
    return out


def _alone(leg: Leg, rank: int, score: float) -> dict[str, Any]:
    return {"score": score, "rank": rank, "normalised": None, "weight": 1.0, "contribution": score}
