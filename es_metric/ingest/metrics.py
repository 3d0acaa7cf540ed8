"""Worker metrics with prometheus_client in multiprocess mode.

Celery's ``task_prerun``/``task_postrun`` signals time each embedding batch and read its result
(images indexed, failures by reason); the decode threads time each image fetch (the worker
context's batch clock). The figures are prometheus_client counters and histograms: in a worker,
whose main process set ``PROMETHEUS_MULTIPROC_DIR`` (promfiles.prepare), every prefork child
makes them (its worker context's ``metrics()``) and writes them to its own file in that folder;
whoever reads the folder (the API on the same host, or the worker's own exporter) sums them.
"""
from __future__ import annotations

import logging
from typing import Any

from celery.signals import task_postrun, task_prerun

from .celery_app import TASK_NAME
from .context import current

log = logging.getLogger(__name__)
REASON_CHARS = 64  # a failure reason is a label: cut, whatever a result holds


def record_batch(seconds: float, result: Any, fetches: list[float]) -> None:
    """One batch's figures: its time, its images' fetch times, what it indexed and why images failed."""
    metrics = current().metrics()
    metrics.batch_seconds.observe(seconds)
    for value in fetches:
        metrics.fetch_seconds.observe(value)
    if isinstance(result, dict):
        metrics.embedded.inc(int(result.get("indexed") or 0))
        for failure in result.get("failures") or []:
            metrics.failed.labels(str(failure.get("reason") or "unknown")[:REASON_CHARS]).inc()


@task_prerun.connect
def _batch_started(task_id=None, task=None, **_kw) -> None:
    if task is not None and task.name == TASK_NAME and task_id:
        current().batch.start(task_id)


@task_postrun.connect
def _batch_ended(task_id=None, task=None, retval=None, **_kw) -> None:
    if task is None or task.name != TASK_NAME or not task_id:
        return
    timed = current().batch.end(task_id)
    if timed is None:
        return
    try:
        record_batch(timed[0], retval, timed[1])
    except Exception as exc:  # noqa: BLE001 - metrics never cost a batch
        log.warning("could not record the batch's metrics: %s", exc)
