"""Where database-side augmentation (DBA) keeps its state in a document (pure).

Every name the DBA passes read or write comes from ``DbaFields``: the searched vector (the
augmented one once a pass ran), the model's own vector ``<field>_raw`` (indexed for kNN, so a
pass finds a document's neighbours by the raw vectors with the index's own HNSW graph), the
marker ``<field>_dba`` ({k, alpha, kth, run, at}: ``kth`` is the similarity of the k-th
neighbour, what decides whether a new document enters the neighbourhood; ``run`` the pass that
wrote it) and the worker's time stamp (which documents an ingest wrote). The names derive from
the vector field, so they follow it wherever the vector lives.

A document is *augmented* when it has the raw field; until then its searched vector is raw.
"""
from __future__ import annotations

from dataclasses import dataclass

from .vectors import raw_vector_field

LEGACY_MARKER = "dba"  # where passes before incremental DBA kept their marker (not indexed)
MARKER_MAPPING = {"type": "object", "dynamic": False,
                  "properties": {"run": {"type": "keyword"}, "at": {"type": "date"}}}
_RAW_KEYS = ("type", "dims", "similarity", "element_type", "index_options")


@dataclass(frozen=True)
class DbaFields:
    """The field names of one index's DBA state."""

    vector: str                  # searched: augmented, or raw until the first pass
    raw: str                     # the model's own vector (kNN-indexed)
    marker: str                  # {k, alpha, kth, run, at}
    stamp: str = "indexed_at"    # when the worker wrote the vector
    model_id: str = "model_id"   # which model made it

    @classmethod
    def of(cls, vector_field: str) -> "DbaFields":
        return cls(vector_field, raw_vector_field(vector_field), f"{vector_field}_dba")

    def derived(self) -> list[str]:
        """Fields a pass writes besides the vector (never copied to another model's index)."""
        return [self.raw, self.marker, LEGACY_MARKER]


def dba_properties(fields: DbaFields, vector_mapping: dict) -> dict:
    """Put-mapping properties of the raw field (indexed as the searched vector is, same dims,
    similarity and graph options) and of the marker."""
    raw = {k: v for k, v in vector_mapping.items() if k in _RAW_KEYS}
    return {fields.raw: {**raw, "index": True}, fields.marker: MARKER_MAPPING}


def raw_state(properties: dict, fields: DbaFields) -> str:
    """``absent`` (no pass ran), ``indexed`` (kNN on raw vectors works) or ``unindexed`` (a
    raw copy from before incremental DBA: not searchable, so only a rebuilt index can use it)."""
    raw = properties.get(fields.raw)
    if raw is None:
        return "absent"
    return "indexed" if raw.get("index", True) and raw.get("type") == "dense_vector" else "unindexed"


def marker(k: int, alpha: float, kth: float, run: str, at: str) -> dict:
    """A document's DBA marker."""
    return {"k": int(k), "alpha": float(alpha), "kth": round(float(kth), 7), "run": run, "at": at}


def augmented_doc(fields: DbaFields, augmented: list[float], raw: list[float], mark: dict) -> dict:
    """The partial-update body of an augmented document: both vectors (a lean index keeps them
    out of ``_source``, so an update must carry them) and the marker."""
    return {fields.vector: augmented, fields.raw: raw, fields.marker: mark}
