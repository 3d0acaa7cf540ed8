"""How a batch of the worker path ends: the failure classes, retries and redeliveries.

An error a worker hits is either transient (the cluster or the broker is away or overloaded:
retried with backoff, a bounded number of times) or permanent (anything else). A permanent
error, or a transient one that outlived its retries, fails every image of its batch with the
reason (dead letters + job progress), so the job still ends.
"""
from __future__ import annotations

import logging
from typing import Any, Mapping, Sequence

import redis
from elasticsearch import ApiError, ConnectionError as EsConnectionError, ConnectionTimeout
from elasticsearch import Elasticsearch

from ..config import Settings
from ..errors import ClusterUnavailable, EsmError, ImageError, MappingMismatch, ModelError, WorkerLost
from ..index.failures import MAX_MESSAGE_CHARS, failure_for, item_key, record_failures, record_key
from ..types import BatchOutcome
from .jobs import JobProgress

log = logging.getLogger(__name__)

# Whole-request statuses worth another try later: overloaded, or a node/shard briefly away.
TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
TRANSIENT_TYPES = (ClusterUnavailable, EsConnectionError, ConnectionTimeout,
                   redis.ConnectionError, redis.TimeoutError)
MAX_RETRIES = 10
MAX_DELIVERIES = 3         # starts of one try of a task: more means its worker process keeps dying


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


def check_redelivery(settings: Settings, job: Mapping[str, Any], task_id: str | None, retries: int) -> None:
    """WorkerLost when this try of the task already started MAX_DELIVERIES times: its worker
    process died each time (late acks redeliver it), and would die again forever."""
    if not isinstance(job, dict) or not job.get("job_id") or not task_id:
        return
    starts = JobProgress(settings, str(job["job_id"])).delivery(task_id, retries)
    if starts > MAX_DELIVERIES:
        raise WorkerLost(f"the worker process running this batch died {starts - 1} times (killed, "
                         "out of memory, or a crash while decoding)",
                         hint="find the image in the worker log; the other batches go on")


def fail_batch(settings: Settings, client: Elasticsearch, job: Mapping[str, Any], items: Sequence[object],
               exc: BaseException) -> BatchOutcome:
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
