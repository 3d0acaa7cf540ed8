"""Search request bodies as pure functions (unit-tested as dicts): kNN, filters, hybrid, RRF.

Filters go *inside* the kNN clause (pre-filtering), so k results come back even when the filter
is selective. Reciprocal rank fusion is computed here in Python because not every cluster has
the RRF retriever.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import SearchError

_FILTER_RE = re.compile(r"^\s*([A-Za-z0-9_.@-]+)\s*(!=|>=|<=|=|>|<)\s*(.*?)\s*$")
RANGE_OPS = {">": "gt", ">=": "gte", "<": "lt", "<=": "lte"}


@dataclass(frozen=True)
class Filter:
    field: str
    op: str
    value: str


def parse_filter(text: str) -> Filter:
    """``field=value``, ``field!=value``, ``field>=10``, ``field=a|b`` or ``field=10..50``."""
    m = _FILTER_RE.match(text)
    if not m or not m.group(3):
        raise SearchError(f"cannot read filter {text!r}",
                          hint="use FIELD=VALUE, FIELD!=VALUE, FIELD>=N, FIELD=A|B or FIELD=LO..HI")
    return Filter(*m.groups())


def exact_field(field: str, properties: dict) -> str:
    """The field to use for exact matching: a text field's ``.keyword`` sub-field if it has one."""
    node = properties.get(field)
    if node is None and "." in field:
        head, rest = field.split(".", 1)
        sub = properties.get(head, {})
        return f"{head}.{exact_field(rest, sub.get('properties') or sub.get('fields') or {})}"
    if node and node.get("type") == "text":
        for name, sub in (node.get("fields") or {}).items():
            if sub.get("type") == "keyword":
                return f"{field}.{name}"
    return field


def _number(value: str):
    try:
        return int(value)
    except ValueError:
        try:
            return float(value)
        except ValueError:
            return value


def filter_clauses(filters: list[Filter], properties: dict | None = None) -> dict:
    """A ``bool`` query with ``filter`` and ``must_not`` clauses (empty dict when no filters)."""
    props = properties or {}
    must, must_not = [], []
    for f in filters:
        field = exact_field(f.field, props)
        if f.op in RANGE_OPS:
            must.append({"range": {f.field: {RANGE_OPS[f.op]: _number(f.value)}}})
        elif ".." in f.value and f.op == "=":
            lo, hi = f.value.split("..", 1)
            bounds = {k: _number(v) for k, v in (("gte", lo), ("lte", hi)) if v}
            must.append({"range": {f.field: bounds}})
        elif "|" in f.value:
            clause = {"terms": {field: [_number(v) for v in f.value.split("|")]}}
            (must_not if f.op == "!=" else must).append(clause)
        else:
            clause = {"term": {field: _number(f.value)}}
            (must_not if f.op == "!=" else must).append(clause)
    if not must and not must_not:
        return {}
    body: dict = {}
    if must:
        body["filter"] = must
    if must_not:
        body["must_not"] = must_not
    return {"bool": body}


def knn_clause(field: str, vector: list[float], k: int, *, num_candidates: int | None = None,
               filter_query: dict | None = None, min_similarity: float | None = None,
               boost: float | None = None, exclude_ids: list[str] | None = None) -> dict:
    clause: dict = {"field": field, "query_vector": [float(x) for x in vector], "k": k,
                    "num_candidates": max(num_candidates or 0, k, min(10 * k, 10_000), 100)}
    filt = _with_excluded(filter_query or {}, exclude_ids)
    if filt:
        clause["filter"] = filt
    if min_similarity is not None:
        clause["similarity"] = float(min_similarity)
    if boost is not None:
        clause["boost"] = float(boost)
    return clause


def _with_excluded(filter_query: dict, exclude_ids: list[str] | None) -> dict:
    if not exclude_ids:
        return filter_query
    body = {k: list(v) for k, v in (filter_query.get("bool") or {}).items()}
    body.setdefault("must_not", []).append({"ids": {"values": list(exclude_ids)}})
    return {"bool": body}


def text_query(text: str, fields: list[str], filter_query: dict | None = None,
               boost: float | None = None) -> dict:
    match: dict = {"query": text, "fields": fields or ["*"], "type": "best_fields"}
    if boost is not None:
        match["boost"] = float(boost)
    body: dict = {"must": [{"multi_match": match}]}
    if filter_query:
        body.update({k: v for k, v in filter_query["bool"].items()})
    return {"bool": body}


def raw_vector_field(vector_field: str) -> str:
    """Where a DBA pass keeps the model's own vector (es_metric.dba)."""
    return f"{vector_field}_raw"


def search_body(*, knn: dict | None = None, query: dict | None = None, size: int = 10,
                offset: int = 0, vector_field: str = "image_vector",
                highlight_fields: list[str] | None = None) -> dict:
    """The whole request: kNN and/or query, page, source without the (large) vector."""
    body: dict = {"size": size, "from": offset,
                  "_source": {"excludes": [vector_field, raw_vector_field(vector_field)]},
                  "track_total_hits": False}
    if knn:
        body["knn"] = knn
    if query:
        body["query"] = query
    if highlight_fields:
        body["highlight"] = {"fields": {f: {} for f in highlight_fields}, "require_field_match": True}
    return body


def expansion_body(field: str, vector: list[float], k: int, *, filter_query: dict | None = None,
                   exclude_ids: list[str] | None = None, num_candidates: int | None = None) -> dict:
    """Query expansion's first round: the top ``k`` documents' vectors (and model ids) only."""
    return {"size": k, "_source": [field, "model_id"], "track_total_hits": False,
            "knn": knn_clause(field, vector, k, num_candidates=num_candidates,
                              filter_query=filter_query, exclude_ids=exclude_ids)}


def rrf_fuse(rankings: list[list[str]], k: int = 60, size: int | None = None) -> list[tuple[str, float]]:
    """Reciprocal rank fusion: score(d) = sum over rankings of 1 / (k + rank), ranks from 1."""
    scores: dict[str, float] = {}
    for ranking in rankings:
        for rank, doc_id in enumerate(ranking, 1):
            scores[doc_id] = scores.get(doc_id, 0.0) + 1.0 / (k + rank)
    fused = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
    return fused[:size] if size else fused
