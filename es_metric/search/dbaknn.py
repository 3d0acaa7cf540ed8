"""Neighbours by the raw vectors, found with the index's own kNN (what the DBA passes build on).

A document's raw vector is in ``<vector>_raw`` (beside the vector, index/fields.py) once a pass
augmented it, else in the searched field itself. One search with two kNN clauses covers both
(the second filtered to documents without a raw copy), so every document is found by its raw
vector exactly once, whatever the passes have done so far, and while they write. The
candidates come from HNSW (approximate, ``num_candidates`` wide); their similarities are then
recomputed exactly from the raw vectors, so the only approximation is a true neighbour the
graph search did not return. A new document's search for the neighbourhoods it enters needs
the first clause only (only augmented documents have a marker to enter; the second clause's
filter would be evaluated for nothing).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from elasticsearch import Elasticsearch

from ..errors import ClusterError
from ..index.dbafields import DbaFields
from ..index.fields import DocFields
from ..index.vectors import hit_vector
from ..similarity import Metric

MSEARCH_CHUNK = 100   # kNN searches per _msearch request
IDS_CHUNK = 1000      # documents per raw-vector read
MAX_CANDIDATES = 10_000  # Elasticsearch's ceiling for num_candidates


@dataclass(frozen=True)
class Neighbour:
    """A kNN hit: its id, its similarity (from the score) and its DBA marker (None: never
    augmented)."""

    id: str
    similarity: float
    marker: dict[str, Any] | None


@dataclass(frozen=True)
class Marked:
    """An augmented document as read: raw vector, whole marker, and the version they were read
    from (a write based on them is made conditional on it)."""

    id: str
    vector: np.ndarray
    marker: dict[str, Any] | None
    seq_no: int | None
    primary_term: int | None


def score_similarity(score: float, metric: Metric) -> float:
    """The similarity behind a kNN score: cosine (1 + s) / 2; l2_norm 1 / (1 + d^2), given as -d."""
    if metric is Metric.COSINE:
        return 2.0 * score - 1.0
    return -math.sqrt(max(1.0 / max(score, 1e-30) - 1.0, 0.0))


def raw_knn(fields: DbaFields, vector: list[float], k: int, candidates: int,
            augmented_only: bool = False) -> list[dict[str, Any]]:
    """kNN clauses over every document's raw vector: the raw copy of augmented documents, the
    searched field of the others (still raw there); ``augmented_only``: the first alone."""
    clause = {"query_vector": vector, "k": k, "num_candidates": max(k, min(candidates, MAX_CANDIDATES))}
    fresh = {**clause, "field": fields.vector, "filter": {"bool": {"must_not": [{"exists": {"field": fields.raw}}]}}}
    return [{**clause, "field": fields.raw}] + ([] if augmented_only else [fresh])


def neighbour_search(fields: DbaFields, vector: list[float], k: int, candidates: int,
                     augmented_only: bool = False) -> dict[str, Any]:
    """One _msearch body: the ``k`` nearest documents by raw vector, with what of their markers
    decides whether a new document enters their neighbourhood (``k``, ``kth``)."""
    return {"knn": raw_knn(fields, vector, k, candidates, augmented_only), "size": k,
            "_source": [f"{fields.marker}.k", f"{fields.marker}.kth"], "track_total_hits": False}


def raw_read(fields: DbaFields, ids: list[str], augmented: bool, marked: bool = False) -> dict[str, Any]:
    """One _msearch body reading the raw vectors of ``ids``: from the raw copy of the augmented
    ones, or from the searched field of the others; ``marked``: with the augmented ones'
    markers and versions."""
    has_raw = {"exists": {"field": fields.raw}}
    query = {"bool": {"filter": [{"ids": {"values": ids}}, has_raw]}} if augmented else \
        {"bool": {"filter": [{"ids": {"values": ids}}], "must_not": [has_raw]}}
    body = {"query": query, "size": len(ids), "_source": False, "track_total_hits": False,
            "docvalue_fields": [fields.raw if augmented else fields.vector]}
    return {**body, "_source": [fields.marker], "seq_no_primary_term": True} if marked else body


def _msearch(client: Elasticsearch, index: str, bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    responses = []
    for lo in range(0, len(bodies), MSEARCH_CHUNK):
        searches: list[dict[str, Any]] = []
        for body in bodies[lo:lo + MSEARCH_CHUNK]:
            searches += [{"index": index}, body]
        for resp in client.msearch(searches=searches)["responses"]:
            if "error" in resp:
                raise ClusterError(f"a DBA search on {index} failed: {str(resp['error'])[:300]}")
            responses.append(resp)
    return responses


def find_neighbours(client: Elasticsearch, index: str, fields: DbaFields, vectors: np.ndarray,
                    k: int, candidates: int, metric: Metric, augmented_only: bool = False) -> list[list[Neighbour]]:
    """The ``k`` nearest documents (by raw vector) of each of ``vectors``, best first: ids,
    similarities and markers' ``k`` and ``kth`` only (no vectors: cheap for a wide ``k``);
    ``augmented_only``: among the augmented documents only."""
    bodies = [neighbour_search(fields, v.astype(float).tolist(), k, candidates, augmented_only) for v in vectors]
    return [[Neighbour(h["_id"], score_similarity(h["_score"], metric),
                       DocFields.read(h.get("_source"), fields.marker)) for h in r["hits"]["hits"]]
            for r in _msearch(client, index, bodies)]


def read_marked(client: Elasticsearch, index: str, fields: DbaFields, ids: list[str]) -> dict[str, Marked]:
    """The augmented documents among ``ids``: raw vectors, markers, versions."""
    bodies = [raw_read(fields, ids[lo:lo + IDS_CHUNK], True, marked=True) for lo in range(0, len(ids), IDS_CHUNK)]
    out: dict[str, Marked] = {}
    for resp in _msearch(client, index, bodies):
        for hit in resp["hits"]["hits"]:
            vec = hit_vector(hit, fields.raw)
            if vec is not None:
                out[hit["_id"]] = Marked(hit["_id"], np.asarray(vec, np.float32),
                                         DocFields.read(hit.get("_source"), fields.marker),
                                         hit.get("_seq_no"), hit.get("_primary_term"))
    return out


def read_raw(client: Elasticsearch, index: str, fields: DbaFields,
             ids: list[str]) -> dict[str, tuple[np.ndarray, bool]]:
    """{id: (raw vector, augmented?)} of the documents ``ids`` that have a vector."""
    bodies = [raw_read(fields, ids[lo:lo + IDS_CHUNK], aug)
              for lo in range(0, len(ids), IDS_CHUNK) for aug in (True, False)]
    out: dict[str, tuple[np.ndarray, bool]] = {}
    for body, resp in zip(bodies, _msearch(client, index, bodies)):
        field = body["docvalue_fields"][0]
        for hit in resp["hits"]["hits"]:
            vec = hit_vector(hit, field)
            if vec is not None:
                out[hit["_id"]] = (np.asarray(vec, np.float32), field == fields.raw)
    return out


def exact_top(vector: np.ndarray, ids: list[str], vectors: np.ndarray, k: int, metric: Metric,
              exclude: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(ids, similarities, vectors) of the ``k`` most similar of the candidates to ``vector``,
    best first, ``exclude`` (the document itself) left out; similarities computed exactly."""
    keep = [i for i, d in enumerate(ids) if d != exclude]
    cand = vectors[keep]
    sims = cand @ vector if metric is Metric.COSINE else -np.linalg.norm(cand - vector[None], axis=1)
    order = np.argsort(-sims, kind="stable")[:k]
    return [ids[keep[i]] for i in order], sims[order].astype(np.float32), cand[order]
