"""Search on a multi-photo index: nested kNN scores each document by its best photo, inner hits
name that photo (``matched_image``), and a document as a query is its photos' vectors combined.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from elasticsearch import Elasticsearch, NotFoundError

from ..index.indices import IndexInfo


def with_photos(info: IndexInfo, knn: dict[str, Any]) -> dict[str, Any]:
    """The kNN clause, asking for the best photo of each hit on a multi-photo index."""
    if info.photos_field:
        knn["inner_hits"] = {"size": 1, "_source": False, "fields": [f"{info.photos_field}.ref"]}
    return knn


def matched_image(hit: dict[str, Any], photos_field: str) -> dict[str, Any] | None:
    """``{"ref", "score", "offset"}`` of the photo that matched (None for a text-only hit)."""
    inner = (((hit.get("inner_hits") or {}).get(photos_field) or {}).get("hits") or {}).get("hits")
    if not inner:
        return None
    top = inner[0]
    refs = ((top.get("fields") or {}).get(photos_field) or [{}])[0].get("ref") or [None]
    return {"ref": refs[0], "score": top.get("_score"), "offset": (top.get("_nested") or {}).get("offset")}


def combine(vectors: list[list[float]], similarity: str) -> list[float]:
    """A product's photos as one query: their mean, normalised again for cosine/dot_product
    (the space the vectors live in); l2_norm vectors are averaged as they are."""
    mean = np.asarray(vectors, np.float64).mean(axis=0)
    if similarity != "l2_norm":
        mean /= max(float(np.linalg.norm(mean)), 1e-12)
    combined: list[float] = mean.astype(np.float32).astype(float).tolist()
    return combined


def product_vector(client: Elasticsearch, info: IndexInfo,
                   doc_id: str) -> tuple[list[float] | None, str | None] | None:
    """(query vector or None, model id) of an indexed multi-photo document, its photos'
    vectors combined; None: no such document (the contract of ``index.vectors.read_vector``)."""
    fields = info.fields
    try:
        doc = client.get(index=info.concrete, id=doc_id, source_includes=[fields.vector, fields.model_id])
    except NotFoundError:
        return None
    src = doc["_source"]
    vectors = fields.layout.photo_vectors(src)
    return (combine(vectors, info.similarity) if vectors else None), fields.read(src, fields.model_id)


def document_image(client: Elasticsearch, info: IndexInfo, doc_id: str, photo: int | None = None) -> str | None:
    """The image a document shows: its ``image_path``, or on a multi-photo index its
    ``photo``-th photo's ref (None when the document or photo does not exist)."""
    fields = info.fields
    field = fields.photos if photo is not None and fields.photos else fields.image_path
    doc = client.options(ignore_status=404).get(
        index=info.concrete, id=doc_id, source_includes=[f"{field}.ref" if field == fields.photos else field])
    src = (doc.get("_source") or {}) if doc.get("found") else {}
    if field == fields.image_path or photo is None:  # photo None: field is image_path
        path = fields.read(src, field)
        return path if isinstance(path, str) else None
    photos = fields.read(src, field) or []
    ref = photos[photo].get("ref") if photo < len(photos) and isinstance(photos[photo], dict) else None
    return ref if isinstance(ref, str) else None
