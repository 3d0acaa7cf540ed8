"""Worker metrics, kept in Redis so that one scrape sees every worker on every machine.

Celery's ``task_prerun``/``task_postrun`` signals time each embedding batch and read its result
(images indexed, failures by reason); the pipeline reports how long each image took to fetch
(read or download, and decode). Each batch ends in one Redis pipeline of counter increments;
histograms are bucket counters (cumulated when read). The API's ``/metrics`` turns them into
Prometheus families (web/metrics.py).
"""
from __future__ import annotations

import bisect
import logging

import redis
from celery.signals import task_postrun, task_prerun

from .celery_app import TASK_NAME
from .context import current

log = logging.getLogger(__name__)
PREFIX = "esm:metrics:"
BATCH_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
FETCH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
HISTOGRAMS = {"batch_seconds": BATCH_BUCKETS, "fetch_seconds": FETCH_BUCKETS}

def _bucket(buckets: tuple[float, ...], value: float) -> str:
    i = bisect.bisect_left(buckets, value)
    return repr(buckets[i]) if i < len(buckets) else "+Inf"


def observe(pipe, name: str, values: list[float]) -> None:
    """Add ``values`` to the Redis histogram ``name`` (bucket, sum and count fields)."""
    key = PREFIX + name
    for value in values:
        pipe.hincrby(key, _bucket(HISTOGRAMS[name], value), 1)
        pipe.hincrbyfloat(key, "sum", value)
        pipe.hincrby(key, "count", 1)


def record_batch(r: redis.Redis, seconds: float, result: dict | None, fetches: list[float]) -> None:
    """One batch's figures, in one round trip."""
    pipe = r.pipeline(transaction=False)
    observe(pipe, "batch_seconds", [seconds])
    observe(pipe, "fetch_seconds", fetches)
    if isinstance(result, dict):
        pipe.hincrby(PREFIX + "images", "indexed", int(result.get("indexed") or 0))
        for failure in result.get("failures") or []:
            pipe.hincrby(PREFIX + "failed", str(failure.get("reason") or "unknown")[:64], 1)
    pipe.execute()


def read_histogram(r: redis.Redis, name: str) -> tuple[list[tuple[str, float]], float]:
    """([(le, cumulative count)...], sum) of the Redis histogram ``name``."""
    raw = {_text(k): float(v) for k, v in r.hgetall(PREFIX + name).items()}
    total, buckets = 0.0, []
    for le in [repr(b) for b in HISTOGRAMS[name]] + ["+Inf"]:
        total += raw.get(le, 0.0)
        buckets.append((le, total))
    return buckets, raw.get("sum", 0.0)


def read_counters(r: redis.Redis, name: str) -> dict[str, float]:
    return {_text(k): float(v) for k, v in r.hgetall(PREFIX + name).items()}


def _text(key: bytes | str) -> str:
    return key.decode() if isinstance(key, bytes) else key


@task_prerun.connect
def _batch_started(task_id=None, task=None, **_kw) -> None:
    if task is not None and task.name == TASK_NAME and task_id:
        current().batch.start(task_id)


@task_postrun.connect
def _batch_ended(task_id=None, task=None, retval=None, **_kw) -> None:
    if task is None or task.name != TASK_NAME or not task_id:
        return
    ctx = current()
    timed = ctx.batch.end(task_id)
    if timed is None:
        return
    try:
        record_batch(ctx.redis(), timed[0], retval, timed[1])
    except Exception as exc:  # noqa: BLE001 - metrics never cost a batch
        log.warning("could not record the batch's metrics: %s", exc)
