"""Where es-metric keeps its own fields in the documents of one index (pure): ONE record that
mappings, workers, follower, status, search, reindex/migrate and DBA ask for field names.

Two layouts, both recorded in the index's ``_meta.es_metric``:

* **top level** (indices es-metric creates, and every index made before the record existed):
  ``image_path``, ``image_sha256``, ``model_id``, ``indexed_at``, ``image_ref``, ``dba``, the
  vector field (``image_vector``, or the nested ``photos`` with ``photos.vector``) and what DBA
  derives from it: the raw copy ``<vector>_raw`` and the marker ``<vector>_dba``. User fields
  (manifest columns) may not take these names.
* **under one object** (``esm mapping create --existing``: an index the shop owns): the same
  fields as ``<object>.model_id``, ``<object>.image_vector``, ``<object>.photos.vector``...
  The object's name (default ``es_metric``, ``--fields-object``) must be free in the shop's
  mapping, so nothing es-metric writes can overwrite a field of the shop's.

The record: ``_meta.es_metric.vector_field`` (full path of the searched vector),
``photos_field`` (full path of the nested photos, multi-photo indices) and ``fields``
(``{"object": name or None, "image_path": path, ...}``); an older record without ``fields`` is
the top-level layout.

API::

    f = DocFields.of_record(meta)      # from _meta.es_metric (or a job spec: the same keys)
    f = DocFields.top_level("image_vector")  /  DocFields.under("es_metric", "image_vector", photos=None)
    f.vector  f.photos  f.raw_vector  f.model_id  f.image_path  f.image_sha256  f.indexed_at
    f.image_ref  f.dba  f.dba_marker   # full dotted paths (``dba``: passes before incremental DBA)
    f.dba_derived                      # what a DBA pass writes besides the vector
    f.record()                         # what ``_meta.es_metric.fields`` stores
    f.reserved                         # top-level names a user field may not take
    f.properties(vector_body)          # mapping properties of all of them (f.bodies: by path)
    DocFields.properties_at({path: mapping}) / DocFields.mapping_of(properties, path)
    f.read(source, path)               # a value at a dotted path of a ``_source`` (f.pop: removed)
    f.doc({path: value, ...})          # a document fragment: bulk bodies, partial updates
    f.has_vector()                     # a query: documents with a vector (nested for photos)
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any, Mapping

from ..errors import ConfigError, shown
from .layout import VectorLayout

DEFAULT_OBJECT = "es_metric"
BOOKKEEPING: dict[str, dict[str, Any]] = {
    "image_path": {"type": "keyword"},    # the image the vector was made from
    "image_sha256": {"type": "keyword"},
    "model_id": {"type": "keyword"},
    "indexed_at": {"type": "date"},
    "image_ref": {"type": "keyword"},     # the image field's value it was made from (--from-index)
}
PHOTO_PROPERTIES = {"ref": {"type": "keyword"}, "sha256": {"type": "keyword"}}
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")


def check_name(name: str, what: str, example: str = DEFAULT_OBJECT) -> str:
    """A plain field name (no dots, no leading ``_``): ConfigError otherwise."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigError(f"{what} {shown(name)} is not a plain field name",
                          hint=f"use lower-case letters, digits, - and _, e.g. {example}")
    return name


@dataclass(frozen=True)
class DocFields:
    """Full dotted paths of every field es-metric writes into an index's documents."""

    vector: str
    photos: str | None = None
    object: str | None = None
    image_path: str = "image_path"
    image_sha256: str = "image_sha256"
    model_id: str = "model_id"
    indexed_at: str = "indexed_at"
    image_ref: str = "image_ref"
    dba: str = "dba"

    @classmethod
    def top_level(cls, vector: str = "image_vector", photos: str | None = None) -> "DocFields":
        return cls(vector, photos)

    @classmethod
    def under(cls, obj: str, vector_leaf: str = "image_vector", photos: str | None = None) -> "DocFields":
        """Everything under ``obj``; ``photos``: the nested field's name inside it (multi-photo)."""
        check_name(obj, "fields object")
        vector = f"{obj}.{photos}.vector" if photos else f"{obj}.{vector_leaf}"
        return cls(vector, f"{obj}.{photos}" if photos else None, obj,
                   **{name: f"{obj}.{name}" for name in (*BOOKKEEPING, "dba")})

    @classmethod
    def of_record(cls, record: Mapping[str, Any]) -> "DocFields":
        """The layout an index record (or a job spec) names; no ``fields``: top level."""
        given = record.get("fields")
        names: dict[str, Any] = given if isinstance(given, dict) else {}
        known: dict[str, Any] = {k: v for k, v in names.items()
                 if k in (*BOOKKEEPING, "dba", "object") and (isinstance(v, str) or v is None)}
        return cls(str(record["vector_field"]), record.get("photos_field") or None, **known)

    @property
    def layout(self) -> VectorLayout:
        """One vector per document or nested photos (layout.py): ask it, never the names."""
        return VectorLayout(self.vector, self.photos)

    def record(self) -> dict[str, Any]:
        return {"object": self.object, **{name: getattr(self, name) for name in (*BOOKKEEPING, "dba")}}

    def with_vector(self, vector: str) -> "DocFields":
        """The same layout with another vector field (a second model's, during a change)."""
        return replace(self, vector=self.layout.with_vector(vector).vector)

    @property
    def raw_vector(self) -> str:
        """Where the DBA pass keeps the model's own vector when it augments ``vector``."""
        return f"{self.vector}_raw"

    @property
    def dba_marker(self) -> str:
        """Where the DBA pass keeps each document's marker ({k, alpha, kth, run, at}): beside
        the vector it augments, so it follows the vector (under the object, or top level)."""
        return f"{self.vector}_dba"

    @property
    def dba_derived(self) -> tuple[str, str, str]:
        """What DBA passes write besides the vector (never copied to another model's index)."""
        return self.raw_vector, self.dba_marker, self.dba

    @property
    def reserved(self) -> frozenset[str]:
        """Top-level names a user field (a manifest column) may not take."""
        if self.object:
            return frozenset({self.object})
        paths = (self.vector, *self.dba_derived, *(getattr(self, n) for n in BOOKKEEPING))
        return frozenset(p.partition(".")[0] for p in paths)

    def bodies(self, vector_body: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """``{dotted path: mapping}`` of the bookkeeping fields and the vector (for several
        photos: the nested field holding it)."""
        out = {getattr(self, name): dict(body) for name, body in BOOKKEEPING.items()}
        return {**out, **self.layout.bodies(vector_body, PHOTO_PROPERTIES)}

    def properties(self, vector_body: dict[str, Any]) -> dict[str, Any]:
        """Mapping properties of the bookkeeping fields and the vector (in its nested photos)."""
        return self.properties_at(self.bodies(vector_body))

    @staticmethod
    def properties_at(bodies: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """``{dotted path: mapping}`` as mapping properties (objects made on the way)."""
        props: dict[str, Any] = {}
        for path, body in bodies.items():
            _put(props, path, body)
        return props

    @staticmethod
    def mapping_of(properties: dict[str, Any], path: str) -> dict[str, Any]:
        """The mapping of ``path`` inside ``properties`` (``{}`` when absent)."""
        node: dict[str, Any] = {"properties": properties}
        for part in path.split("."):
            node = (node.get("properties") or {}).get(part) or {}
        return node

    @staticmethod
    def read(source: dict[str, Any] | None, path: str) -> Any:
        """The value at a dotted ``path`` of a document's ``_source`` (None when absent)."""
        node: Any = source or {}
        if path in node:  # a literal dotted key, as a client may have written it
            return node[path]
        for part in path.split("."):
            if not isinstance(node, dict):
                return None
            node = node.get(part)
        return node

    @staticmethod
    def pop(source: dict[str, Any], path: str) -> Any:
        """Remove the value at a dotted ``path`` of ``source`` (in place); returns it."""
        *parents, leaf = path.split(".")
        node: Any = source
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        return node.pop(leaf, None) if isinstance(node, dict) else None

    @staticmethod
    def doc(values: dict[str, Any]) -> dict[str, Any]:
        """``{dotted path: value}`` as a document fragment (partial updates merge objects, so
        ``{"es_metric": {"model_id": x}}`` leaves the object's other fields alone)."""
        out: dict[str, Any] = {}
        for path, value in values.items():
            *parents, leaf = path.split(".")
            node = out
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value
        return out

    def has_vector(self) -> dict[str, Any]:
        """A query for documents that have a vector (inside a nested photo, for several photos)."""
        return self.layout.has_vector()


def _put(props: dict[str, Any], path: str, body: dict[str, Any]) -> None:
    """Put ``body`` at a dotted ``path`` of mapping ``props`` (objects made on the way)."""
    *parents, leaf = path.split(".")
    for part in parents:
        props = props.setdefault(part, {}).setdefault("properties", {})
    props[leaf] = body
