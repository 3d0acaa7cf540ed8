"""The worker metrics' folder (prometheus_client multiprocess mode) and its readers.

``prepare`` runs in a worker's main process before any task module is imported (Celery's
``celeryd_init``): it empties the folder, points ``PROMETHEUS_MULTIPROC_DIR`` at it (so
prometheus_client, imported after, writes every prefork child's figures to files there), and,
with ``ESM_WORKER_METRICS_PORT``, serves the folder's sum over HTTP: how a worker on another
host is scraped. ``WorkerFiles`` is the collector that sums the folder, for that exporter and
for the API on the worker's host.

prometheus_client is imported inside the functions only, and the metrics are made in each
prefork child (``WorkerMetrics``, held by the worker context): Celery imports the task modules
before ``celeryd_init``, and prometheus_client imported before the variable is set counts in
process memory, where no scrape sees it.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Iterator

from ..config import Settings

log = logging.getLogger(__name__)
ENV = "PROMETHEUS_MULTIPROC_DIR"


def prepare(settings: Settings) -> Path:
    """Empty the worker metrics' folder and make this process (and its children) write there."""
    folder = settings.worker_metrics_dir
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.db"):  # the files of a previous run: counters start again from 0
        stale.unlink(missing_ok=True)
    os.environ[ENV] = str(folder)
    if settings.worker_metrics_port:
        serve(folder, settings.worker_metrics_port)
    return folder


BATCH_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
FETCH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


class WorkerMetrics:
    """A worker process's counters and histograms, made in that process (a worker context
    holds them): registered in no registry, the files are what is read."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Histogram

        self.embedded = Counter("esm_images_embedded", "Images embedded and written", registry=None)
        self.failed = Counter("esm_images_failed", "Images that failed", ["reason"], registry=None)
        self.batch_seconds = Histogram("esm_batch_duration_seconds", "Time a worker took for one "
                                       "batch (decode, embed, write)", buckets=BATCH_BUCKETS, registry=None)
        self.fetch_seconds = Histogram("esm_image_fetch_seconds", "Time to fetch (read or download) "
                                       "and decode one image", buckets=FETCH_BUCKETS, registry=None)


class WorkerFiles:
    """A prometheus_client collector: the sum of the worker files in ``folder`` at each scrape
    (nothing while the folder does not exist, e.g. no worker ran on this host)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def collect(self) -> Iterator[Any]:
        from prometheus_client.multiprocess import MultiProcessCollector

        files = [str(p) for p in self.folder.glob("*.db")] if self.folder.is_dir() else []
        yield from MultiProcessCollector.merge(files, accumulate=True)


def serve(folder: Path, port: int) -> Any:
    """``/metrics`` of this host's workers on ``port`` (a thread of the worker's main process);
    the server (``shutdown()`` stops it)."""
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry()
    registry.register(WorkerFiles(folder))
    server, _thread = start_http_server(port, registry=registry)
    log.info("worker metrics at http://0.0.0.0:%d/metrics", port)
    return server
