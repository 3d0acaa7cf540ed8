"""Several photos per document (pure): a multi-photo index keeps each photo's vector in a
``nested`` field, so kNN scores a document by its best photo and inner hits name that photo.

The convention of the CLI: the vector field of a multi-photo index is ``<photos>.vector``
(default ``photos.vector``); ``<photos>`` is a nested field whose objects are
``{ref, sha256, vector}``. A vector field without a dot is the one-vector-per-document layout.
Where the fields of an index are (top level, or under the object of an ``--existing`` index)
is recorded with the index: see fields.py.
"""
from __future__ import annotations

from .fields import DocFields, check_name
from .layout import VectorLayout

DEFAULT_PHOTOS_FIELD = "photos"
MAX_PHOTOS = 64  # photos of one document: a gallery, not a catalogue


def multi_photo_vector_field(photos_field: str = DEFAULT_PHOTOS_FIELD) -> str:
    """The vector field of a multi-photo index whose photos are in ``photos_field``."""
    return f"{check_name(photos_field, 'photos field', DEFAULT_PHOTOS_FIELD)}.vector"


def layout(vector_field: str) -> DocFields:
    """The top-level layout of a vector field named as the CLI takes it: ``photos.vector`` is
    the multi-photo layout (photos nested in ``photos``), a name without a dot one vector per
    document."""
    return DocFields.top_level(vector_field, VectorLayout.of_field(vector_field).photos)
