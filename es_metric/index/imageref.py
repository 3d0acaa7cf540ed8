"""The ``image_ref`` field: which value of the shop's image field a document's vector was made
from, and what happens to a vector when the image it was made from is gone.

``image_ref`` holds the image field's value itself (a path/URL, or a list of them), or, for a
value a keyword cannot hold (over 8 KiB), ``sha256:<hex>`` of its JSON: a follower compares it
with the field's value, so every value is stored and compared, however long.

A document whose image changed to one that is refused (a path outside the roots, a URL
refused, a file that is no image...) would otherwise keep the vector of its earlier image and
stay searchable as that photo. ``retire`` removes that vector (and the bookkeeping of the
earlier image) and records the refused value as ``image_ref``: a follower then finds nothing
new to embed (refused once, never on every pass) and `esm status` counts the document among
those without a vector. A document whose ``image_ref`` already is that value keeps its vector
(it is of that very image: failing to read it again changes nothing), and so does one
es-metric never embedded. The write is conditional on the document's sequence number: a write
of the shop's in between wins.
"""
from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

from elasticsearch import Elasticsearch
from elasticsearch.helpers import streaming_bulk

from .failures import now
from .fields import DocFields

log = logging.getLogger(__name__)
MAX_REF_BYTES = 8192  # per value: a keyword term must stay under Lucene's 32 KiB


def ref_token(value: object) -> str | list[str] | None:
    """What ``image_ref`` stores for an image field's ``value`` (None: no value)."""
    if value in (None, "", []):
        return None
    values = value if isinstance(value, list) else [value]
    if all(isinstance(v, str) and len(v.encode("utf-8", "surrogatepass")) <= MAX_REF_BYTES for v in values):
        return value  # type: ignore[return-value]
    text = json.dumps(value, ensure_ascii=False, sort_keys=True, default=repr)
    return "sha256:" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def is_stale(source: dict[str, Any], image_field: str, fields: DocFields) -> bool:
    """Has the document an image value its vector was not made from (new or changed)?"""
    value = fields.read(source, image_field)
    return value not in (None, "", []) and fields.read(source, fields.image_ref) != ref_token(value)


def retired(fields: DocFields, value: object) -> dict[str, Any]:
    """The partial update of a document whose image ``value`` was refused."""
    gone = [fields.photos] if fields.photos else [fields.vector, fields.raw_vector]
    return fields.doc({**{f: None for f in gone}, fields.image_path: None, fields.image_sha256: None,
                       fields.image_ref: ref_token(value), fields.indexed_at: now()})


def retire(client: Elasticsearch, index: str, fields: DocFields, values: dict[str, object]) -> list[str]:
    """Remove the vectors of earlier images from the documents whose image ``values``
    ({document id: image field value}) were refused (see the module doc); returns their ids."""
    if not values:
        return []
    docs = client.mget(index=index, ids=list(values),
                       source_includes=[fields.image_ref, fields.model_id])["docs"]
    actions = []
    for doc in docs:
        src = doc.get("_source") or {}
        stored = fields.read(src, fields.image_ref)
        if not doc.get("found") or stored == ref_token(values[doc["_id"]]) or \
                (stored is None and fields.read(src, fields.model_id) is None):
            continue
        actions.append({"_op_type": "update", "_index": index, "_id": doc["_id"],
                        "if_seq_no": doc["_seq_no"], "if_primary_term": doc["_primary_term"],
                        "doc": retired(fields, values[doc["_id"]])})
    done = []
    for ok, info in streaming_bulk(client, actions, raise_on_error=False, max_retries=3):
        op = next(iter(info.values()))
        if ok:
            done.append(op["_id"])
        elif op.get("status") not in (404, 409):  # deleted, or written again meanwhile
            log.error("could not remove the stale vector of %s: %s", op.get("_id"), op.get("error"))
    if done:
        log.info("%s: removed the vectors of %d documents whose new image was refused", index, len(done))
    return done
