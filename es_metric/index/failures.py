"""Dead letters: the failures index, where every image of a job that could not be indexed is
recorded with its reason (one record per index + image), and read back by ``esm failures``.

A later success of the same image clears its record. The keys here (an image, or an image as
the document the user named) are also what job progress counts.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import logging
from typing import Any, Mapping

from elasticsearch import Elasticsearch, NotFoundError
from elasticsearch.helpers import streaming_bulk

from ..config import Settings
from ..types import Failure, failure
from .indices import ensure_failures_index

log = logging.getLogger(__name__)

MAX_REF_CHARS = 4096       # refs and messages are stored as keyword/text: keep them bounded
MAX_MESSAGE_CHARS = 2000


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


def entry_key(ref: str, doc_id: object = None) -> str:
    """What job progress counts and a dead letter is kept under: an image, or an image as the
    document the user named (two manifest lines may share a photo under two ids)."""
    return ref if doc_id in (None, "") else f"{ref}\x00{doc_id}"


def item_ref(item: object) -> str:
    """The image reference of a task item, whatever shape another application sent."""
    ref = item.get("ref") if isinstance(item, dict) else None
    return ref if isinstance(ref, str) and ref else repr(item)[:200]


def item_key(item: object) -> str:
    return entry_key(item_ref(item), item.get("id") if isinstance(item, dict) else None)


def failure_for(item: object, reason: str, message: str) -> Failure:
    """A failure record of one task item: its image, the user's document id if any, why."""
    return failure(item_ref(item), reason, message, item.get("id") if isinstance(item, dict) else None)


def record_key(record: Failure) -> str:
    return entry_key(record["ref"], record.get("doc_id"))


def dead_letter_id(alias: str, key: str) -> str:
    return hashlib.sha1(f"{alias}\x00{key}".encode("utf-8", "surrogatepass")).hexdigest()


def record_failures(client: Elasticsearch, settings: Settings, job: Mapping[str, Any],
                    failures: list[Failure]) -> None:
    """Dead-letter records in the failures index (one per index + image; rewrites are idempotent)."""
    if not failures:
        return
    ensure_failures_index(client, settings.failures_index)
    alias = str(job.get("alias") or job.get("index"))
    stamp = now()
    actions = [{"_op_type": "index", "_index": settings.failures_index,
                "_id": dead_letter_id(alias, record_key(f)),
                "_source": {**f, "ref": f["ref"][:MAX_REF_CHARS],
                            "message": str(f.get("message", ""))[:MAX_MESSAGE_CHARS],
                            "index": alias, "job_id": job.get("job_id"),
                            "model_id": job.get("model_id"), "at": stamp}} for f in failures]
    for ok, info in streaming_bulk(client, actions, raise_on_error=False, max_retries=5):
        if not ok:
            log.error("could not record failure: %s", info)


def clear_failures(client: Elasticsearch, settings: Settings, job: Mapping[str, Any], keys: list[str]) -> int:
    """Delete the dead-letter records of entries now indexed (a read first: most have none)."""
    if not keys:
        return 0
    alias = str(job.get("alias") or job.get("index"))
    ids = [dead_letter_id(alias, key) for key in dict.fromkeys(keys)]
    try:
        docs = client.mget(index=settings.failures_index, ids=ids, source=False)["docs"]
    except NotFoundError:  # no failures index yet
        return 0
    found = [d["_id"] for d in docs if d.get("found")]
    for ok, info in streaming_bulk(client, ({"_op_type": "delete", "_index": settings.failures_index,
                                             "_id": i} for i in found),
                                   raise_on_error=False, max_retries=5):
        if not ok and next(iter(info.values())).get("status") != 404:
            log.error("could not clear failure record: %s", info)
    return len(found)


def list_failures(client: Elasticsearch, failures_index: str, index: str, size: int = 1000) -> list[dict[str, Any]]:
    if not client.indices.exists(index=failures_index):
        return []
    client.indices.refresh(index=failures_index)
    resp = client.search(index=failures_index, size=size, query={"term": {"index": index}},
                         sort=[{"at": "desc"}])
    return [h["_source"] for h in resp["hits"]["hits"]]
