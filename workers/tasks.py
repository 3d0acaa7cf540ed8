"""Celery tasks: thin shells over es_metric. Arguments are JSON-safe (ids, paths), never tensors."""
from __future__ import annotations

import logging
import os

import redis
from celery.signals import worker_process_init
from elasticsearch import ConnectionError as EsConnectionError, ConnectionTimeout

from es_metric.config import Settings
from es_metric.embed import set_threads
from es_metric.errors import ClusterUnavailable
from es_metric.es import make_client
from es_metric.pipeline import process_batch
from workers.celery_app import app

log = logging.getLogger(__name__)
_STATE: dict = {}

# Transient: the cluster or the broker is away. Retried with exponential backoff and jitter.
TRANSIENT = (ClusterUnavailable, EsConnectionError, ConnectionTimeout, redis.ConnectionError)


@worker_process_init.connect
def _init_process(**_kw) -> None:
    """Share the cores between worker processes instead of oversubscribing them."""
    conc = int(os.environ.get("ESM_WORKER_CONCURRENCY", "1"))
    set_threads(max(1, (os.cpu_count() or 1) // max(conc, 1)))


def _client():
    if "client" not in _STATE:
        _STATE["settings"] = Settings.from_env()
        _STATE["client"] = make_client(_STATE["settings"])
    return _STATE["settings"], _STATE["client"]


@app.task(name="es_metric.embed_batch", bind=True, autoretry_for=TRANSIENT, max_retries=10,
          retry_backoff=2, retry_backoff_max=120, retry_jitter=True)
def embed_batch(self, job: dict, items: list[dict]) -> dict:
    """Decode, embed and bulk-write one batch of images."""
    settings, client = _client()
    return process_batch(settings, client, job, items)
