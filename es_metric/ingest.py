"""Client side of ingest: turn a source into Celery tasks and follow their progress."""
from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from typing import Callable

from elasticsearch import Elasticsearch
from elasticsearch.helpers import scan

from .config import Settings
from .embed import batches
from .errors import ClusterUnavailable, IndexStateError
from .index import IndexInfo, index_info
from .progress import JobProgress
from .redact import redact_text, redact_url

log = logging.getLogger(__name__)

TASK_NAME = "es_metric.embed_batch"


@dataclass(frozen=True)
class Job:
    job_id: str
    total: int
    target: str
    tasks: int


def job_spec(info: IndexInfo, alias: str, job_id: str, mode: str, target: str | None = None) -> dict:
    """The JSON-safe description every task of a job carries."""
    return {"job_id": job_id, "alias": alias, "index": target or info.concrete,
            "model_id": info.model_id, "model_path": info.model_path,
            "vector_field": info.vector_field, "mode": mode}


def existing_index_items(client: Elasticsearch, index: str, image_field: str,
                         base_dir: str | None = None) -> list[dict]:
    """Documents of an existing index with an image path in ``image_field`` (updated by id)."""
    import os
    items = []
    for hit in scan(client, index=index, query={"query": {"exists": {"field": image_field}}},
                    _source=[image_field]):
        ref = hit["_source"][image_field]
        if base_dir and not os.path.isabs(ref):
            ref = os.path.join(base_dir, ref)
        items.append({"ref": ref, "id": hit["_id"], "fields": {}})
    if not items:
        raise IndexStateError(f"no document of {index!r} has the field {image_field!r}",
                              hint="name the field holding image paths with --image-field")
    return items


def enqueue(settings: Settings, client: Elasticsearch, alias: str, items: list[dict], *,
            mode: str = "index", target: str | None = None) -> Job:
    """Send the items as batches of ``settings.batch_size`` to the workers."""
    from workers.celery_app import make_app

    info = index_info(client, target or alias)
    job_id = uuid.uuid4().hex[:16]
    spec = job_spec(info, alias, job_id, mode, target)
    total = len({item["ref"] for item in items})
    JobProgress(settings, job_id).start(total, index=spec["index"], alias=alias)
    app = make_app(settings)
    n = 0
    try:
        for chunk in batches(items, settings.batch_size):
            app.send_task(TASK_NAME, args=[spec, list(chunk)], queue=settings.worker_queue)
            n += 1
    except Exception as exc:
        raise ClusterUnavailable(f"could not queue tasks on {redact_url(settings.redis_url)}: "
                                 f"{redact_text(str(exc), settings.secrets())}",
                                 hint="is Redis up? `esm stack status`") from None
    finally:
        app.close()
    log.info("job %s: %d images in %d tasks for %s", job_id, total, n, spec["index"])
    return Job(job_id, total, spec["index"], n)


def wait(settings: Settings, job: Job, on_progress: Callable[[int, int, int], None] | None = None,
         timeout: float | None = None, poll: float = 0.5) -> tuple[int, int]:
    """Block until every image is indexed or failed; returns (done, failed)."""
    progress = JobProgress(settings, job.job_id)
    started = last_change = time.monotonic()
    last = (-1, -1)
    while True:
        _total, done, failed = progress.counts()
        if on_progress:
            on_progress(job.total, done, failed)
        if done + failed >= job.total:
            return done, failed
        now = time.monotonic()
        if (done, failed) != last:
            last, last_change = (done, failed), now
        elif now - last_change > 60:
            _warn_if_no_worker(settings)
            last_change = now
        if timeout is not None and now - started > timeout:
            raise ClusterUnavailable(f"job {job.job_id} not finished after {timeout:.0f} s "
                                     f"({done} done, {failed} failed of {job.total})",
                                     hint="check `esm stack status` and the worker log")
        time.sleep(poll)


def _warn_if_no_worker(settings: Settings) -> None:
    from .stack import worker_ping
    if not worker_ping(settings):
        log.warning("no Celery worker answers on %s; tasks wait in the queue "
                    "(start one with `esm stack up`)", redact_url(settings.redis_url))



def make_searchable(client: Elasticsearch, job: Job) -> None:
    """Refresh the target so every written document is visible to search now."""
    client.indices.refresh(index=job.target)
