"""Celery tasks: thin shells over es_metric. Arguments are JSON-safe (ids, paths), never tensors."""
from __future__ import annotations

import logging
import os

from celery.signals import worker_process_init
from celery.utils.time import get_exponential_backoff_interval

from ..model.runtime import set_threads
from ..types import BatchOutcome, ImageItem, JobSpec
from . import metrics  # noqa: F401  (times batches and counts images through Celery signals)
from .celery_app import TASK_NAME, app
from .context import current, init_process
from .outcomes import MAX_RETRIES, check_redelivery, fail_batch, is_transient
from .pipeline import process_batch

log = logging.getLogger(__name__)


@worker_process_init.connect
def _init_process(**_kw) -> None:
    """Share the cores between worker processes instead of oversubscribing them, and between
    the model and the decode threads (no busy-waiting model threads). The process's context
    (settings, clients, decode threads) is built here, once."""
    conc = init_process().settings.worker_concurrency
    set_threads(max(1, (os.cpu_count() or 1) // max(conc, 1)), spin=False)


@app.task(name=TASK_NAME, bind=True, max_retries=MAX_RETRIES)
def embed_batch(self, job: JobSpec, items: list[ImageItem]) -> BatchOutcome:
    """Decode, embed and bulk-write one batch of images. Transient errors (cluster or broker
    away) retry with backoff; permanent ones, and exhausted retries, fail every image of the
    batch with the reason (dead letters + job progress), so the job ends."""
    ctx = current()
    settings, client = ctx.settings, ctx.es()
    try:
        check_redelivery(settings, job, self.request.id, self.request.retries)
        return process_batch(settings, client, job, items, final=self.request.retries >= MAX_RETRIES)
    except Exception as exc:  # noqa: BLE001 - every failure is classified, none is lost
        if is_transient(exc) and self.request.retries < MAX_RETRIES:
            delay = get_exponential_backoff_interval(2, self.request.retries, 120, full_jitter=True)
            raise self.retry(exc=exc, countdown=delay)  # noqa: B904 - Celery's Retry carries exc
        return fail_batch(settings, client, job, items, exc)
