"""Where database-side augmentation (DBA) keeps its state in a document (pure).

Every name the DBA passes read or write comes from ``DbaFields``: the searched vector (the
augmented one once a pass ran), the model's own vector ``<field>_raw`` (indexed for kNN, so a
pass finds a document's neighbours by the raw vectors with the index's own HNSW graph), the
marker ``<field>_dba`` ({k, alpha, kth, ids, run, at}: ``kth`` is the similarity of the k-th
neighbour, what decides whether a new document enters the neighbourhood; ``ids`` the k
neighbours' ids, best first, so a pass that enters the neighbourhood merges the new documents
into that list instead of searching again; ``run`` the pass that wrote it; only ``run`` and
``at`` are indexed) and the worker's time stamp (which documents an ingest wrote). The names are the
index's own (``DocFields``, fields.py): beside the vector, so on a shop's ``--existing`` index
they sit under es-metric's object, never next to the shop's fields.

A document is *augmented* when it has the raw field; until then its searched vector is raw.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .fields import DocFields

MARKER_MAPPING = {"type": "object", "dynamic": False,
                  "properties": {"run": {"type": "keyword"}, "at": {"type": "date"}}}
_RAW_KEYS = ("type", "dims", "similarity", "element_type", "index_options")


@dataclass(frozen=True)
class DbaFields:
    """The field names (full dotted paths) of one index's DBA state, as its DocFields names them."""

    vector: str                  # searched: augmented, or raw until the first pass
    raw: str                     # the model's own vector (kNN-indexed)
    marker: str                  # {k, alpha, kth, ids, run, at}
    stamp: str                   # when the worker wrote the vector
    model_id: str                # which model made it

    @classmethod
    def of(cls, fields: DocFields | str) -> "DbaFields":
        """From the index's layout (``info.fields``); a bare vector field: the top-level one."""
        f = DocFields.top_level(fields) if isinstance(fields, str) else fields
        return cls(f.vector, f.raw_vector, f.dba_marker, f.indexed_at, f.model_id)


def dba_bodies(fields: DbaFields, vector_mapping: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{dotted path: mapping}`` of the raw field (indexed as the searched vector is, same
    dims, similarity and graph options) and of the marker (``DocFields.properties_at`` makes
    them put-mapping properties)."""
    raw = {k: v for k, v in vector_mapping.items() if k in _RAW_KEYS}
    return {fields.raw: {**raw, "index": True}, fields.marker: MARKER_MAPPING}


def dba_properties(fields: DbaFields, vector_mapping: dict[str, Any]) -> dict[str, Any]:
    """Put-mapping properties of the raw field and of the marker (objects made on the way)."""
    return DocFields.properties_at(dba_bodies(fields, vector_mapping))


def raw_state(properties: dict[str, Any], fields: DbaFields) -> str:
    """``absent`` (no pass ran), ``indexed`` (kNN on raw vectors works) or ``unindexed`` (a
    raw copy from before incremental DBA: not searchable, so only a rebuilt index can use it)."""
    raw = DocFields.mapping_of(properties, fields.raw) or None
    if raw is None:
        return "absent"
    return "indexed" if raw.get("index", True) and raw.get("type") == "dense_vector" else "unindexed"


def marker(k: int, alpha: float, kth: float, run: str, at: str,
           ids: list[str] | None = None) -> dict[str, Any]:
    """A document's DBA marker; ``ids``: its k nearest (best first), kept but not indexed."""
    mark = {"k": int(k), "alpha": float(alpha), "kth": round(float(kth), 7), "run": run, "at": at}
    return mark if ids is None else {**mark, "ids": [str(i) for i in ids]}


def augmented_doc(fields: DbaFields, augmented: list[float], raw: list[float], mark: dict[str, Any]) -> dict[str, Any]:
    """The partial-update body of an augmented document: both vectors (a lean index keeps them
    out of ``_source``, so an update must carry them) and the marker, at their paths."""
    return DocFields.doc({fields.vector: augmented, fields.raw: raw, fields.marker: mark})
