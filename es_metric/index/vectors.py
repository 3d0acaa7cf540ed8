"""A lean index: the vectors are left out of ``_source`` and read back from their doc values.

A float vector kept again as JSON in ``_source`` is most of a document's bytes on disk. Elasticsearch
keeps the exact float32 vector in the field's doc values (also for int8/int4/bbq types, which
rescore with it), so ``--like``, query expansion and the DBA pass read it with
``docvalue_fields`` instead of ``_source``.

The catch: a partial update (``_update`` with ``doc``) rebuilds the document from ``_source``, so
a vector left out of ``_source`` is silently dropped unless the update carries it again. Every
write es-metric makes carries the vector (workers, DBA); other applications that update
documents of a lean index must send the vector too, or re-index the image (``esm ingest``);
``esm status`` counts documents without a vector.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .fields import DocFields

if TYPE_CHECKING:  # the pure mapping helpers stay importable without the client
    from elasticsearch import Elasticsearch


def raw_vector_field(vector_field: str) -> str:
    """Where the DBA pass keeps the model's own vector when it augments ``vector_field``."""
    return DocFields(vector_field).raw_vector


def vector_fields(vector_field: str) -> list[str]:
    """The vector fields of an es-metric index: the searched one and the DBA raw copy."""
    return [vector_field, raw_vector_field(vector_field)]


def lean_source(fields: DocFields | str) -> dict[str, Any]:
    """The mapping's ``_source`` of a lean index (the vectors left out)."""
    return {"excludes": vector_fields(fields.vector if isinstance(fields, DocFields) else fields)}


def is_lean(mappings: dict[str, Any], vector_field: str) -> bool:
    """Whether an index's mappings leave ``vector_field`` out of ``_source``."""
    return vector_field in ((mappings.get("_source") or {}).get("excludes") or [])


def hit_vector(hit: dict[str, Any], field: str) -> list[float] | None:
    """A hit's vector from its doc values (requested with ``docvalue_fields``), else from
    ``_source`` (an index made before lean indices, or a fields-less response)."""
    values = (hit.get("fields") or {}).get(field)
    if values:  # a dense_vector's doc values come as one list per value: [[x, y, ...]]
        first = values[0]
        return [float(v) for v in (first if isinstance(first, list) else values)]
    vector: list[float] | None = DocFields.read(hit.get("_source"), field)
    return vector


def read_vector(client: Elasticsearch, index: str, doc_id: str,
                fields: DocFields) -> tuple[list[float] | None, str | None] | None:
    """(vector or None, model id) of one document, read from doc values; None: no such document."""
    # the client's types want field-and-format objects and a bool/dict _source; ES takes names
    resp = client.search(index=index, size=1, query={"ids": {"values": [doc_id]}},
                         docvalue_fields=[fields.vector],  # type: ignore[list-item]
                         source=[fields.model_id],  # type: ignore[arg-type]
                         track_total_hits=False)
    hits = resp["hits"]["hits"]
    if not hits:
        return None
    return hit_vector(hits[0], fields.vector), fields.read(hits[0].get("_source"), fields.model_id)
