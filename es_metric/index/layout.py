"""Where an index keeps its vectors (pure): the one answer to "one vector per document, or
several photos nested, one vector each?" that mappings, document fields, the workers, search,
reindex and the model change in place ask, instead of deriving it from a field name.

* **single**: the vector is a field of the document (``image_vector``, or
  ``es_metric.image_vector`` under the object of an ``--existing`` index);
* **nested** (multi-photo): the photos are a ``nested`` field (``photos``, or
  ``es_metric.photos``) of objects ``{ref, sha256, <leaf>}``; the vector's full path is
  ``<photos>.<leaf>`` (``photos.vector``), and a second model's vector during a model change
  in place is another leaf of the same photos (``photos.vector__<model id>``).

A nested field is replaced whole by a partial update, so writing one model's vector into the
photos without losing the other model's means reading the photos and writing them back with
the vector merged in (``merged_photos``), under the document's ``if_seq_no``.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

@dataclass(frozen=True)
class VectorLayout:
    """The searched vector's full path and, for several photos per document, the nested field
    holding them (None: one vector per document)."""

    vector: str
    photos: str | None = None

    def __post_init__(self) -> None:
        if self.photos is not None and not self.vector.startswith(f"{self.photos}."):
            raise ValueError(f"vector {self.vector!r} is not inside the photos {self.photos!r}")

    @classmethod
    def of_field(cls, vector_field: str) -> VectorLayout:
        """The CLI's convention for a top-level name: ``photos.vector`` is the nested layout
        (photos in ``photos``), a name without a dot one vector per document."""
        return cls(vector_field, vector_field.rpartition(".")[0] or None)

    @classmethod
    def of_record(cls, record: dict[str, Any]) -> VectorLayout:
        """What an index record (or a job spec: the same keys) names."""
        return cls(str(record["vector_field"]), record.get("photos_field") or None)

    @property
    def nested(self) -> bool:
        """Several photos per document, one vector each."""
        return self.photos is not None

    @property
    def leaf(self) -> str:
        """The vector's name inside each photo (nested), else its full path."""
        return self.vector[len(self.photos) + 1:] if self.photos else self.vector

    def with_vector(self, vector: str) -> VectorLayout:
        """The same layout with another vector (a second model's, during a change in place):
        nested, the new vector is another leaf of the same photos."""
        if self.photos is None:
            return replace(self, vector=vector)
        return replace(self, vector=f"{self.photos}.{vector.rpartition('.')[2]}")

    def has_vector(self) -> dict[str, Any]:
        """A query for documents that have a vector (inside a nested photo, for several photos)."""
        query: dict[str, Any] = {"exists": {"field": self.vector}}
        return {"nested": {"path": self.photos, "query": query}} if self.photos else query

    def bodies(self, vector_body: dict[str, Any],
               photo_properties: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """``{dotted path: mapping}`` of the vector: the field itself, or the nested photos
        (``photo_properties`` beside the vector in each photo)."""
        if self.photos is None:
            return {self.vector: vector_body}
        return {self.photos: {"type": "nested",
                              "properties": {**photo_properties, self.leaf: vector_body}}}

    def photos_of(self, source: dict[str, Any] | None) -> list[dict[str, Any]]:
        """The photo objects of a document's ``_source`` ([] for a single-vector layout)."""
        if self.photos is None:
            return []
        node: Any = source or {}
        for part in self.photos.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        return [p for p in node if isinstance(p, dict)] if isinstance(node, list) else []

    def photo_refs(self, source: dict[str, Any] | None) -> list[str]:
        """The refs of a document's photos, in their order (usable ones only)."""
        return [p["ref"] for p in self.photos_of(source) if isinstance(p.get("ref"), str) and p["ref"]]

    def photo_vectors(self, source: dict[str, Any] | None) -> list[list[float]]:
        """The vectors of a document's photos that have one, in their order."""
        return [[float(v) for v in p[self.leaf]] for p in self.photos_of(source)
                if isinstance(p.get(self.leaf), list)]

    def merged_photos(self, source: dict[str, Any] | None,
                      vectors: dict[str, list[float]] | None) -> list[dict[str, Any]] | None:
        """A document's photos with this layout's vector (its leaf) set in each photo whose ref
        is a key of ``vectors``, every other key (another model's vector) kept; ``vectors=None``:
        the leaf removed from every photo. None when nothing would change."""
        photos, changed = [], False
        for photo in self.photos_of(source):
            ref = photo.get("ref")
            if vectors is None and self.leaf in photo:
                photo, changed = {k: v for k, v in photo.items() if k != self.leaf}, True
            elif vectors is not None and isinstance(ref, str) and ref in vectors:
                photo, changed = {**photo, self.leaf: vectors[ref]}, True
            photos.append(photo)
        return photos if changed else None
