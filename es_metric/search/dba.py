"""Database-side augmentation (DBA) as a pass over an index.

Every document's searchable vector becomes its own vector blended with its k nearest
neighbours' (rerank.augment_database), so a product's photos move toward each other. The
model's own vector is kept in ``<field>_raw`` (a non-indexed ``dense_vector``): a later pass
recomputes from the raw vectors, so running it again (e.g. after more ingests) never compounds.
Documents ingested after a pass have a raw searchable vector until the next pass.

The neighbourhoods are exact (brute force in row blocks), in memory: N x dims floats
(about 1 GB per million 256-d vectors).
"""
from __future__ import annotations

import datetime as dt
import logging
import time
from typing import Any, Iterator

import numpy as np
from elasticsearch import Elasticsearch
from elasticsearch.helpers import scan, streaming_bulk

from ..errors import IndexStateError
from ..index.fields import DocFields
from ..index.indices import IndexInfo, index_info
from ..index.vectors import hit_vector, raw_vector_field as raw_field
from ..similarity import Metric
from ..types import ReRank

log = logging.getLogger(__name__)


def raw_field_mapping(info: IndexInfo) -> dict[str, Any]:
    """The put-mapping body that adds the raw-vector field (stored, not indexed for kNN) and
    the pass's settings (where the index keeps its fields: index/fields.py)."""
    return DocFields.properties_at({
        info.fields.raw_vector: {"type": "dense_vector", "dims": info.dims, "index": False},
        info.fields.dba: {"type": "object", "enabled": False}})


def read_raw_vectors(client: Elasticsearch, info: IndexInfo) -> tuple[list[str], np.ndarray]:
    """Ids and model vectors of every document that has one (the raw copy when a pass ran)."""
    field, raw = info.vector_field, raw_field(info.vector_field)
    ids, vecs = [], []
    for hit in scan(client, index=info.concrete, _source=[info.fields.model_id],
                    query={"query": {"bool": {"filter": [{"exists": {"field": field}}]}},
                           "docvalue_fields": [field, raw]}):  # a lean index: not in _source
        stamp = info.fields.read(hit.get("_source"), info.fields.model_id)
        if stamp not in (None, info.model_id):
            raise IndexStateError(f"document {hit['_id']} was embedded by {stamp}, the index "
                                  f"serves {info.model_id}", hint="finish or abandon the reindex first")
        ids.append(hit["_id"])
        vecs.append(hit_vector(hit, raw) or hit_vector(hit, field))
    return ids, np.asarray(vecs, np.float32).reshape(len(ids), info.dims)


DEFAULT_K = 10


def recorded(info: IndexInfo) -> ReRank:
    """The re-ranking the index recorded from its model card (older indices: the model file)."""
    if info.rerank is not None:
        return ReRank.from_dict(info.rerank)
    from ..model.modelfile import cached_model

    return ReRank.from_dict(cached_model(info.model_path).card.get("rerank"))


def card_setting(info: IndexInfo) -> tuple[int, float]:
    """(k, alpha) the index's model card records for DBA (DEFAULT_K when it records none)."""
    rr = recorded(info)
    return rr.dba_k or DEFAULT_K, rr.dba_alpha


def augment_if_recorded(client: Elasticsearch, index: str) -> dict[str, Any] | None:
    """After an ingest: the DBA pass the model card asks for (None when it asks for none)."""
    info = index_info(client, index)
    rr = recorded(info)
    if info.photos_field:  # one vector per photo: DBA blends documents' vectors, not photos'
        return None
    return augment_index(client, index, rr.dba_k, rr.dba_alpha) if rr.dba_k else None


def augmentation_actions(index: str, info: IndexInfo, ids: list[str], raw: np.ndarray,
                         augmented: np.ndarray, settings: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Bulk partial updates: the augmented vector to search, the raw one kept, the settings."""
    stamp = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    for doc_id, r, a in zip(ids, raw, augmented):
        yield {"_op_type": "update", "_index": index, "_id": doc_id,
               "doc": info.fields.doc({info.vector_field: a.astype(float).round(7).tolist(),
                                       info.fields.raw_vector: r.astype(float).round(7).tolist(),
                                       info.fields.dba: {**settings, "at": stamp}})}


def augment_index(client: Elasticsearch, index: str, k: int, alpha: float = 3.0) -> dict[str, Any]:
    """One DBA pass over ``index`` (alias or name); returns counts and timings."""
    info = index_info(client, index)
    if info.photos_field:
        raise IndexStateError(f"{info.name} keeps several photos per document; the DBA pass works on "
                          "one vector per document", hint="search it without DBA")
    started = time.monotonic()
    client.indices.put_mapping(index=info.concrete, properties=raw_field_mapping(info))
    ids, raw = read_raw_vectors(client, info)
    read_s = time.monotonic() - started
    from .rerank import augment_database  # torch: only the pass itself needs it

    augmented = augment_database(raw, k, alpha, Metric(info.similarity))
    errors = 0
    actions = augmentation_actions(info.concrete, info, ids, raw, augmented, {"k": k, "alpha": alpha})
    for ok, item in streaming_bulk(client, actions, chunk_size=500, raise_on_error=False, max_retries=5):
        if not ok:
            errors += 1
            log.error("dba update failed: %s", item)
    client.indices.refresh(index=info.concrete)
    total_s = time.monotonic() - started
    log.info("dba: %d documents of %s augmented (k=%d) in %.1f s", len(ids), info.concrete, k, total_s)
    return {"index": info.concrete, "documents": len(ids), "failed": errors, "k": k, "alpha": alpha,
            "read_s": round(read_s, 2), "total_s": round(total_s, 2)}
