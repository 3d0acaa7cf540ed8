"""Dead letters, and the failure classes of the worker path.

Every image of a job ends as done or as a dead-letter record (one per index + image, with a
reason) in the failures index, which a later success of the same image clears. An error a
worker hits is either transient (the cluster or the broker is away or overloaded: retried with
backoff, a bounded number of times) or permanent (anything else). A permanent error, or a
transient one that outlived its retries, fails every image of its batch with the reason, so
the job still ends.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import logging

import redis
from elasticsearch import ApiError, ConnectionError as EsConnectionError, ConnectionTimeout
from elasticsearch import Elasticsearch, NotFoundError
from elasticsearch.helpers import streaming_bulk

from .config import Settings
from .errors import ClusterUnavailable, EsmError, ImageError, MappingMismatch, ModelError, WorkerLost
from .index import ensure_failures_index
from .progress import JobProgress

log = logging.getLogger(__name__)

# Whole-request statuses worth another try later: overloaded, or a node/shard briefly away.
TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
TRANSIENT_TYPES = (ClusterUnavailable, EsConnectionError, ConnectionTimeout,
                   redis.ConnectionError, redis.TimeoutError)
MAX_RETRIES = 10
MAX_DELIVERIES = 3         # starts of one try of a task: more means its worker process keeps dying
MAX_REF_CHARS = 4096       # refs and messages are stored as keyword/text: keep them bounded
MAX_MESSAGE_CHARS = 2000


def is_transient(exc: BaseException) -> bool:
    """True when trying again later can succeed (Elasticsearch or Redis away or overloaded)."""
    if isinstance(exc, TRANSIENT_TYPES):
        return True
    return isinstance(exc, ApiError) and exc.status_code in TRANSIENT_STATUS


def failure_reason(exc: BaseException) -> tuple[str, str]:
    """(reason code, one-line message) for an error that fails a whole batch."""
    if isinstance(exc, ImageError):
        reason = exc.reason
    elif isinstance(exc, ModelError):
        reason = "model_error"
    elif isinstance(exc, MappingMismatch):
        reason = "mapping_mismatch"
    elif isinstance(exc, WorkerLost):
        reason = "worker_lost"
    elif is_transient(exc):
        reason = "retries_exhausted"
    elif isinstance(exc, ApiError):
        reason = "rejected_by_elasticsearch"
    else:
        reason = "worker_error"
    text = str(exc) if isinstance(exc, EsmError) else f"{type(exc).__name__}: {exc}"
    return reason, text[:MAX_MESSAGE_CHARS]


def check_redelivery(settings: Settings, job: dict, task_id: str | None, retries: int) -> None:
    """WorkerLost when this try of the task already started MAX_DELIVERIES times: its worker
    process died each time (late acks redeliver it), and would die again forever."""
    if not isinstance(job, dict) or not job.get("job_id") or not task_id:
        return
    starts = JobProgress(settings, str(job["job_id"])).delivery(task_id, retries)
    if starts > MAX_DELIVERIES:
        raise WorkerLost(f"the worker process running this batch died {starts - 1} times (killed, "
                         "out of memory, or a crash while decoding)",
                         hint="find the image in the worker log; the other batches go on")


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


def failure_for(item: object, reason: str, message: str) -> dict:
    """A failure record of one task item: its image, the user's document id if any, why."""
    doc_id = item.get("id") if isinstance(item, dict) else None
    record = {"ref": item_ref(item), "reason": reason, "message": message}
    if doc_id not in (None, ""):
        record["doc_id"] = str(doc_id)
    return record


def record_key(record: dict) -> str:
    return entry_key(record["ref"], record.get("doc_id"))


def dead_letter_id(alias: str, key: str) -> str:
    return hashlib.sha1(f"{alias}\x00{key}".encode("utf-8", "surrogatepass")).hexdigest()


def record_failures(client: Elasticsearch, settings: Settings, job: dict, failures: list[dict]) -> None:
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


def clear_failures(client: Elasticsearch, settings: Settings, job: dict, keys: list[str]) -> int:
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


def fail_batch(settings: Settings, client: Elasticsearch, job: dict, items: list,
               exc: BaseException) -> dict:
    """Record every image of a batch as failed with the reason of ``exc``: in the dead-letter
    index (best effort: Elasticsearch may be what failed) and in the job's progress."""
    reason, message = failure_reason(exc)
    failures = list({item_key(i): failure_for(i, reason, message) for i in items}.values())
    log.error("job %s: batch of %d failed permanently: %s", job.get("job_id"), len(failures), message)
    try:
        record_failures(client, settings, job, failures)
    except Exception as err:  # noqa: BLE001 - the progress record below must still happen
        log.error("job %s: could not write dead-letter records: %s", job.get("job_id"), err)
    if job.get("job_id"):
        JobProgress(settings, str(job["job_id"])).record([], [record_key(f) for f in failures])
    return {"indexed": 0, "failed": len(failures), "failures": failures}


def list_failures(client: Elasticsearch, failures_index: str, index: str, size: int = 1000) -> list[dict]:
    if not client.indices.exists(index=failures_index):
        return []
    client.indices.refresh(index=failures_index)
    resp = client.search(index=failures_index, size=size, query={"term": {"index": index}},
                         sort=[{"at": "desc"}])
    return [h["_source"] for h in resp["hits"]["hits"]]
