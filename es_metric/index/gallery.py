"""Several photos per document (pure): a multi-photo index keeps each photo's vector in a
``nested`` field, so kNN scores a document by its best photo and inner hits name that photo.

The convention: the vector field of a multi-photo index is ``<photos>.vector`` (default
``photos.vector``); ``<photos>`` is a nested field whose objects are ``{ref, sha256, vector}``.
A vector field without a dot is the one-vector-per-document layout. Everything that reads the
index's vector field (mapping, reindex, search) asks this module which layout it has.
"""
from __future__ import annotations

import re

from ..errors import ConfigError, shown

DEFAULT_PHOTOS_FIELD = "photos"
MAX_PHOTOS = 64  # photos of one document: a gallery, not a catalogue
PHOTO_PROPERTIES = {"ref": {"type": "keyword"}, "sha256": {"type": "keyword"}}


def photos_field_of(vector_field: str) -> str | None:
    """The nested field holding the photos, or None for a one-vector index."""
    return vector_field.rpartition(".")[0] or None


def multi_photo_vector_field(photos_field: str = DEFAULT_PHOTOS_FIELD) -> str:
    """The vector field of a multi-photo index whose photos are in ``photos_field``."""
    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,63}", photos_field or ""):
        raise ConfigError(f"photos field {shown(photos_field)} is not a plain field name",
                          hint="use lower-case letters, digits, - and _, e.g. photos")
    return f"{photos_field}.vector"


def nest(vector_field: str, vector_body: dict) -> dict:
    """Top-level properties for the vector: ``{field: dense_vector}``, or for ``photos.vector``
    ``{photos: nested {ref, sha256, vector: dense_vector}}``."""
    photos, _, leaf = vector_field.rpartition(".")
    if not photos:
        return {vector_field: vector_body}
    return {photos: {"type": "nested", "properties": {**PHOTO_PROPERTIES, leaf: vector_body}}}


def find_vector(properties: dict, vector_field: str) -> dict:
    """The mapping of the vector field inside ``properties`` (``{}`` when absent)."""
    photos, _, leaf = vector_field.rpartition(".")
    if not photos:
        return properties.get(vector_field, {})
    return (properties.get(photos, {}).get("properties") or {}).get(leaf, {})


def top_level(vector_field: str) -> str:
    """The top-level property the vector lives under (the nested field for several photos)."""
    return vector_field.partition(".")[0]


def vector_exists(vector_field: str) -> dict:
    """A query for documents that have a vector (inside a nested photo, for several photos)."""
    photos = photos_field_of(vector_field)
    query = {"exists": {"field": vector_field}}
    return {"nested": {"path": photos, "query": query}} if photos else query
