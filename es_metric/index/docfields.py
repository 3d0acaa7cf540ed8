"""User fields of a document: data under the document body, never bulk metadata (pure).

Manifest columns and task fields from other applications are checked here twice: when a
manifest is read (a clear reason per line) and again in the worker (tasks may come from any
application that can reach the broker). A top-level name starting with ``_`` is refused
(Elasticsearch reserves those: ``_index``, ``_source``, ``_routing``, ``_version``...), and so
is a name that would overwrite es-metric's own fields: which names those are, the index's
record says (fields.py: the top-level bookkeeping fields and the vector, or the one object an
``--existing`` index keeps them under). ``routing``, ``version``, ``version_type``,
``parent``... without the underscore are ordinary fields once under the body.
"""
from __future__ import annotations

from typing import Any

from .fields import DocFields

# Elasticsearch refuses a longer document id for the whole bulk request, not just the item.
MAX_ID_BYTES = 512
# A partial update of a document the shop's own application may be writing at the same moment
# (its price, its stock) is merged again on the newer version up to this many times instead of
# failing with 409 version_conflict_engine_exception; the merge leaves the shop's fields as
# they are. (bench/update_conflicts.py, 3 writers on 2 documents: 13 of 600 refused without it, 0 with it.)
RETRY_ON_CONFLICT = 3


class FieldRefused(ValueError):
    """A user field or id that cannot be written; ``reason`` is a short code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def check_fields(fields: object, layout: DocFields) -> dict[str, Any]:
    """``fields`` if they can go under a document body of an index with that ``layout`` of
    es-metric's own fields; FieldRefused otherwise."""
    if not isinstance(fields, dict):
        raise FieldRefused("bad_fields", f"fields must be a JSON object, not {type(fields).__name__}")
    reserved = layout.reserved
    for name in fields:
        if not isinstance(name, str):
            raise FieldRefused("bad_fields", f"field name {name!r} is not a string")
        if name.startswith("_"):
            raise FieldRefused("reserved_field", f"field {name!r}: names starting with '_' are "
                               "reserved by Elasticsearch (metadata); rename the column")
        if name.split(".", 1)[0] in reserved:
            raise FieldRefused("reserved_field", f"field {name!r} would overwrite es-metric's own "
                               f"field {name.split('.', 1)[0]!r}; rename the column")
    return fields


def check_id(value: object) -> str | None:
    """A document id from user data (a string or an integer), or None for "use the image hash"."""
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise FieldRefused("bad_id", f"document id {value!r} must be a string or an integer")
    text = str(value)
    if len(text.encode("utf-8", "surrogatepass")) > MAX_ID_BYTES:
        raise FieldRefused("bad_id", f"document id of {len(text.encode('utf-8', 'surrogatepass'))} "
                           f"bytes is over Elasticsearch's {MAX_ID_BYTES}-byte limit")
    return text


def document_body(fields: dict[str, Any], bookkeeping: dict[str, Any]) -> dict[str, Any]:
    """The stored document: the user's fields, then es-metric's (which always win)."""
    return {**fields, **bookkeeping}


def document_action(index: str, doc_id: str, bookkeeping: dict[str, Any],
                    user_fields: dict[str, Any] | None) -> dict[str, Any]:
    """The bulk action writing es-metric's fields of one document: merged into the existing
    document (``user_fields`` None: an update, retried on a concurrent writer's conflict), or
    the whole document with the user's fields."""
    if user_fields is None:
        return {"_op_type": "update", "_index": index, "_id": doc_id, "retry_on_conflict": RETRY_ON_CONFLICT,
                "_source": {"doc": bookkeeping}}
    return {"_op_type": "index", "_index": index, "_id": doc_id, "_source": document_body(user_fields, bookkeeping)}
