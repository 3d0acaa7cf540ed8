"""Client side of ingest: turn a source into Celery tasks and follow their progress."""
from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

from elasticsearch import Elasticsearch
from elasticsearch.helpers import scan

from ..config import Settings
from ..errors import ClusterUnavailable, ConfigError, IndexStateError, shown
from ..index.failures import item_key, record_failures, record_key
from ..index.fields import DocFields
from ..index.imageref import retire
from ..index.indices import IndexInfo, index_info, record_image_roots
from ..paths import as_roots
from ..redact import redact_text, redact_url
from ..types import Failure, ImageItem, JobSpec, Mode, OtherModel
from .celery_app import TASK_NAME, make_app
from .jobs import JobProgress
from .sources import Source, checked_item
from .stall import activity, requeue_orphans, stall_error, task_id

log = logging.getLogger(__name__)
# Times one wait gives a job's orphaned tasks (delivered, held by no live worker) back to the
# queue before calling the job stalled.
REQUEUES = 3

@dataclass(frozen=True)
class Job:
    job_id: str
    total: int
    target: str
    tasks: int
    refused: int = 0
    # What was sent (the spec and each task's items), so that a wait can send a task the broker
    # lost again; empty for a job this process did not send.
    spec: JobSpec | None = field(default=None, compare=False, repr=False)
    batches: tuple[tuple[dict, ...], ...] = field(default=(), compare=False, repr=False)
    started_at: float = 0.0  # epoch seconds: what the job wrote is stamped after this (DBA's window)


def job_spec(info: IndexInfo, alias: str, job_id: str, mode: Mode, target: str | None = None,
             roots: tuple[str, ...] = ()) -> JobSpec:
    """The JSON-safe description every task of a job carries (``roots``: the folders the
    worker may read for this index, besides ESM_IMAGE_ROOTS; ``fields``: where es-metric's
    fields are in the documents, fields.py)."""
    spec: JobSpec = {"job_id": job_id, "alias": alias, "index": target or info.concrete,
                     "model_id": info.model_id, "model_path": info.model_path,
                     "vector_field": info.vector_field,
                     "mode": mode,
                     "roots": list(roots), "runtime": info.runtime, "runtime_parity": info.runtime_parity,
                     "runtime_variant": info.runtime_variant, "fields": info.fields.record()}
    if info.photos_field:
        spec["photos_field"] = info.photos_field
    if info.dba_raw:
        spec["dba_raw"] = True
    return spec


def existing_roots(settings: Settings, client: Elasticsearch, index: str,
                   base_dir: str | None = None) -> tuple[Path, ...]:
    """Where the images of an existing index's documents may be read from: ESM_IMAGE_ROOTS,
    ``base_dir`` and the roots recorded for the index."""
    return as_roots(settings.image_roots + as_roots([base_dir] if base_dir else [])
                    + as_roots(index_info(client, index).image_roots))


def hit_item(hit: dict, image_field: str, index: str, roots: tuple[Path, ...],
             base_dir: str | None = None, multi: bool = False) -> tuple[ImageItem | None, list[Failure]]:
    """(re-embed item or None, failure records) for a document whose ``image_field`` is a path
    inside ``roots``, a URL or a list of them (sources.checked_item: on a multi-photo index a
    refused photo costs the document only that photo). The item carries the field's value
    (``source_ref``): the worker stores it beside the vector, so a follower can tell a changed
    image."""
    value = DocFields.read(hit["_source"], image_field)
    item, records = checked_item(value, hit["_id"], {}, Path(base_dir or "/"), roots, multi=multi,
                                 where=f"{index}/{hit['_id']}", label=f"document {hit['_id']!r}",
                                 hint="set ESM_IMAGE_ROOTS to the image folder, or pass --base-dir FOLDER")
    return ({**item, "source_ref": value} if item else None), records


def existing_index_items(settings: Settings, client: Elasticsearch, index: str, image_field: str,
                         base_dir: str | None = None) -> Source:
    """Documents of an existing index with an image path, URL or list of them in
    ``image_field`` (updated by id). The paths are data: each must lie under ESM_IMAGE_ROOTS,
    ``base_dir`` or the roots recorded for the index, or it is refused with a reason (and a
    vector the document still has of an earlier image is removed: index/imageref.py)."""
    info = index_info(client, index)
    check_image_field(info, image_field)
    source = Source(roots=existing_roots(settings, client, index, base_dir))
    refused: dict[str, object] = {}
    for hit in scan(client, index=index, query={"query": {"exists": {"field": image_field}}},
                    _source=[image_field]):
        item, records = hit_item(hit, image_field, index, source.roots, base_dir, bool(info.photos_field))
        source.add(item, records)
        if item is None:
            refused[hit["_id"]] = DocFields.read(hit["_source"], image_field)
    if not source.items and not source.refused:
        raise IndexStateError(f"no document of {index!r} has the field {image_field!r}",
                              hint="name the field holding image paths with --image-field")
    retire(client, info.concrete, info.fields, refused)
    return source


def check_image_field(info: IndexInfo, image_field: str) -> None:
    """An image field to read may not be one es-metric writes itself (it would feed on its own
    writes), except ``image_path`` of an index es-metric made (re-embedding its own images)."""
    mine = info.fields
    own = {mine.vector, *mine.dba_derived, mine.image_ref, mine.model_id, mine.indexed_at,
           mine.image_sha256, *([mine.photos] if mine.photos else [])}
    if image_field in own or (mine.object and image_field.partition(".")[0] == mine.object):
        raise ConfigError(f"{shown(image_field)} is a field es-metric writes itself, not the shop's "
                          "image field", hint="name the field holding the shop's image paths or URLs")


def enqueue(settings: Settings, client: Elasticsearch, alias: str, source: Source | list[ImageItem], *,
            mode: Mode = "index", target: str | None = None, model: OtherModel | None = None) -> Job:
    """Send the items as batches of ``settings.batch_size`` to the workers; record the
    source's roots for the index and its refused lines as failures of the job. ``model``:
    another model's ``model_id``, ``model_path``, ``vector_field`` (and ``vector_only``) than
    the one the index serves (a model change in place fills its field with it)."""
    if not isinstance(source, Source):
        source = Source(list(source))
    started_at = time.time()
    info = index_info(client, target or alias)
    roots = tuple(str(r) for r in as_roots([*info.image_roots, *map(str, source.roots)]))
    job_id = uuid.uuid4().hex[:16]
    spec: JobSpec = {**job_spec(info, alias, job_id, mode, target, roots), **(model or {})}
    if source.roots:
        record_image_roots(client, spec["index"], roots)
    total = len({item_key(i) for i in source.items} | {record_key(r) for r in source.refused})
    progress = JobProgress(settings, job_id)
    progress.start(total, index=spec["index"], alias=alias)
    if source.refused or source.photos_refused:
        record_failures(client, settings, spec, source.refused + source.photos_refused)
        progress.record([], [record_key(r) for r in source.refused])
    chunks = [tuple(chunk) for chunk in batches(source.items, settings.batch_size)]
    _send(settings, make_app(settings), spec, list(enumerate(chunks)))
    log.info("job %s: %d images in %d tasks for %s", job_id, total, len(chunks), spec["index"])
    return Job(job_id, total, spec["index"], len(chunks), len(source.refused), spec, tuple(chunks),
               started_at)


def batches(items: Sequence, size: int) -> Iterator[Sequence]:
    """``items`` in consecutive slices of at most ``size``."""
    for i in range(0, len(items), size):
        yield items[i:i + size]


def _send(settings: Settings, app, spec: JobSpec, chunks: Sequence[tuple[int, Sequence[dict]]]) -> None:
    """Queue the batches (task ids ``<job id>.<n>``, so the stall detector can find them)."""
    try:
        for n, chunk in chunks:
            app.send_task(TASK_NAME, args=[spec, list(chunk)], queue=settings.worker_queue,
                          task_id=task_id(spec["job_id"], n))
    except Exception as exc:
        raise ClusterUnavailable(f"could not queue tasks on {redact_url(settings.redis_url)}: "
                                 f"{redact_text(str(exc), settings.secrets())}",
                                 hint="is Redis up? `esm stack status`") from None
    finally:
        app.close()


def resend_lost(settings: Settings, job: Job, progress: JobProgress) -> int:
    """Send again, under their own task ids, the batches of ``job`` with an image neither done
    nor failed, when none of the job's tasks is anywhere: kombu's Redis transport pops a task
    from the queue before it records it as delivered, so a broker restart in between loses it.
    A batch that did run after all is rewritten harmlessly (same ids). Returns how many went."""
    if not job.spec or not job.batches:
        return 0
    finished = progress.finished()
    lost = [(n, chunk) for n, chunk in enumerate(job.batches)
            if any(item_key(item) not in finished for item in chunk)]
    if lost:
        _send(settings, make_app(settings), job.spec, lost)
        log.warning("job %s: %d task(s) the broker lost were sent again", job.job_id, len(lost))
    return len(lost)


def wait(settings: Settings, job: Job, on_progress: Callable[[int, int, int], None] | None = None,
         timeout: float | None = None, poll: float = 0.5) -> tuple[int, int]:
    """Block until every image is indexed or failed; returns (done, failed). JobStalled when
    nothing moved for ``settings.stall_seconds`` and nothing of the job is queued or running
    (or only queued, with no worker to run it)."""
    progress = JobProgress(settings, job.job_id)
    started = last_change = time.monotonic()
    last, requeues = (-1, -1), REQUEUES
    while True:
        counts = progress.counts()
        _total, done, failed = counts
        if on_progress:
            on_progress(job.total, done, failed)
        if done + failed >= job.total:
            return done, failed
        now = time.monotonic()
        if (done, failed) != last:
            last, last_change = (done, failed), now
        elif settings.stall_seconds and now - last_change > settings.stall_seconds:
            requeues -= _raise_if_stalled(settings, job, progress, counts, now - last_change, requeues > 0)
            last_change = now
        if timeout is not None and now - started > timeout:
            raise ClusterUnavailable(f"job {job.job_id} not finished after {timeout:.0f} s "
                                     f"({done} done, {failed} failed of {job.total})",
                                     hint="check `esm stack status` and the worker log")
        time.sleep(poll)


def _raise_if_stalled(settings: Settings, job: Job, progress: JobProgress, counts: tuple[int, int, int],
                      quiet_s: float, requeue: bool = True, recheck_s: float = 2.0) -> int:
    """JobStalled when two looks, ``recheck_s`` apart, find no progress and no live task
    (a task moving from the queue to a worker could be missed by one look). When a worker is
    there to take them (``requeue``), tasks delivered to a worker that no longer holds them go
    back to the queue first, and tasks found nowhere are sent again; returns 1 then (the wait
    goes on), else 0."""
    for look in range(2):
        act = activity(settings, progress.redis)
        problem = stall_error(settings, progress.job_id, counts, quiet_s, act)
        if problem is None or progress.counts() != counts:
            return 0
        if look == 0:
            time.sleep(recheck_s)
    if requeue and act.workers:
        if job.job_id in act.unacked and requeue_orphans(settings, job.job_id, progress.redis):
            return 1
        if job.job_id not in act.unacked and job.job_id not in act.queued and \
                resend_lost(settings, job, progress):
            return 1
    assert problem is not None  # each look returned 0 otherwise
    raise problem


def make_searchable(client: Elasticsearch, job: Job) -> None:
    """Refresh the target so every written document is visible to search now."""
    client.indices.refresh(index=job.target)
