"""The worker's job: decode a batch of images, embed them together, bulk-write the vectors.

A bad image becomes a failure record with a reason and never costs the rest of its batch.
Document ids are the user's id or the image's content hash, so a redelivered batch rewrites
the same documents. Progress is kept in Redis sets keyed by image reference (idempotent).
"""
from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from elasticsearch import ApiError, Elasticsearch
from elasticsearch.helpers import streaming_bulk

from ..config import Settings
from ..errors import ClusterOverloaded, ImageError, MappingMismatch, PathRefused
from ..images import DecodeLimits
from ..index.docfields import FieldRefused, check_fields, check_id, document_action
from ..index.failures import (clear_failures, failure_for, item_key, item_ref, now,
                              record_failures, record_key)
from ..index.fields import DocFields
from ..index.imageref import retire
from ..model.pixels import pixel_stack, square_pixels
from ..model.runtime import Embedder, check_runtime, load_embedder, model_threads
from ..paths import job_roots
from ..types import BatchOutcome, Failure, ImageItem, JobSpec
from .context import current
from .jobs import JobProgress
from .fetch import FetchPolicy, open_image
from .photos import PhotoItem, expand, gallery_actions, read_leaves, stored_ref

log = logging.getLogger(__name__)

# Decode threads per worker process, and whether they run ahead of the model (see
# decode_and_embed). None: overlap only when torch runs single-threaded (several worker
# processes share the cores). With one process using every core, alternating wins: decode
# threads would preempt torch's threads at their barriers (bench/embed.py, MobileNetV3 on 2
# cores: 1.01 vs 0.90 of the bare forward pass).
DECODE_THREADS = 2
OVERLAP: bool | None = None

# Documents Elasticsearch refuses as overloaded (429: a full write queue; 503: a shard briefly
# without its primary) are sent again by the bulk helper BULK_RETRIES times, BULK_BACKOFF
# (first, most) seconds apart: short, so a worker slot is not held long. Beyond that the task
# retries the batch later with Celery's backoff (tasks.py), and only its last try gives up.
OVERLOADED = (429, 503)
BULK_RETRIES = 3
BULK_BACKOFF = (0.5, 4.0)

@dataclass
class BatchResult:
    indexed: list[str] = field(default_factory=list)     # entry keys (image, or image + user id)
    failures: list[Failure] = field(default_factory=list)

    def as_dict(self) -> BatchOutcome:
        return {"indexed": len(self.indexed), "failed": len(self.failures),
                "failures": self.failures}


def decode_pool(threads: int) -> ThreadPoolExecutor:
    """The process's decode threads (its worker context's: each Celery prefork child has its
    own), kept between batches."""
    return current().decode_pool(threads)


def prepare_item(item: ImageItem, limits: DecodeLimits, size: int, roots: tuple[Path, ...] = (),
                 policy: FetchPolicy | None = None):
    """(item, uint8 S x S x 3 pixels, sha256, None) or (item, None, None, failure record).
    Fetch a URL under the policy, or confine the path to the roots (symlinks resolved) and read
    a regular file only; safe decode (JPEG draft), centre-crop + resize: GIL-free work for the
    decode threads."""
    try:
        began = time.perf_counter()
        img, sha = open_image(item["ref"], limits, roots, policy, draft=size)
        current().batch.add(time.perf_counter() - began)
        return item, square_pixels(img, size), sha, None
    except (ImageError, PathRefused) as exc:
        return item, None, None, failure_for(item, exc.reason, exc.message)
    except Exception as exc:  # an unknown decoder failure must not cost the batch
        return item, None, None, failure_for(item, "decode_error", f"{type(exc).__name__}: {exc}")


def decode_and_embed(items: Sequence[ImageItem], model: Embedder, limits: DecodeLimits, roots: tuple[Path, ...] = (),
                     sub_batch: int = 16, decode_threads: int = DECODE_THREADS,
                     overlap: bool | None = OVERLAP, policy: FetchPolicy | None = None):
    """(good [(item, sha)], failures, vectors) for all items, in order.

    ``overlap``: hand every item to the decode threads at once, so they decode ahead while the
    model embeds earlier sub-batches. Otherwise decode one sub-batch (all decode threads), then
    embed it (all torch threads), alternately: when the cores are fully used by both phases,
    that avoids decode threads preempting torch's threads at their barriers. ``model``: the
    embedder (torch or ONNX Runtime, ``model.runtime``)."""
    if overlap is None:
        overlap = model_threads() == 1
    pool = decode_pool(decode_threads)
    size = int(model.card["preprocess"]["size"])

    def submit(chunk: Sequence[ImageItem]):
        return [pool.submit(prepare_item, item, limits, size, roots, policy) for item in chunk]

    ahead = submit(items) if overlap else None
    good, failures, vectors = [], [], [np.zeros((0, int(model.card["dims"])), np.float32)]
    for i in range(0, len(items), sub_batch):
        futures = ahead[i:i + sub_batch] if ahead is not None else submit(items[i:i + sub_batch])
        ready = [f.result() for f in futures]
        failures += [err for *_, err in ready if err is not None]
        ok = [(item, px, sha) for item, px, sha, err in ready if err is None]
        if ok:
            vectors.append(model.embed(pixel_stack([px for _, px, _ in ok])))
            good += [(item, sha) for item, _, sha in ok]
    return good, failures, np.concatenate(vectors)


def check_items(items: Sequence[object], layout: DocFields) -> tuple[list[ImageItem], list[Failure]]:
    """(usable items with their id and fields checked, failure records). Tasks may come from
    any application that reaches the broker: user data is checked here again, never trusted
    (``layout``: the index's own fields, which no user field may overwrite)."""
    ok: list[ImageItem] = []
    failures: list[Failure] = []
    for item in items:
        try:
            if not isinstance(item, dict) or not isinstance(item.get("ref"), str) or not item["ref"]:
                raise FieldRefused("bad_item", f"task item {item_ref(item)} has no image path ('ref')")
            ok.append({**item, "ref": item["ref"], "id": check_id(item.get("id")),
                       "fields": check_fields(item.get("fields") or {}, layout)})
        except FieldRefused as exc:
            failures.append(failure_for(item, exc.reason, exc.message))
    return ok, failures


def build_actions(job: JobSpec, good: Sequence[tuple[ImageItem, str]], vectors: np.ndarray) -> list[dict]:
    """Bulk actions: ``index`` a full document, or ``update`` an existing one (by id). User
    fields go under the explicit body (``_source``), never beside the metadata; one action
    per document id (identical images share one)."""
    stamp, fields = now(), DocFields.of_record(job)
    actions: dict[str, dict] = {}
    for (item, sha), vec in zip(good, vectors):
        doc = {fields.vector: vec.astype(float).round(7).tolist()}
        if not job.get("vector_only"):  # a second model's field during a model change: vector only
            doc.update({fields.image_path: item["ref"], fields.image_sha256: sha,
                        fields.model_id: job["model_id"], fields.indexed_at: stamp})
            ref = stored_ref(item)  # what --from-index read: a follower compares it
            if ref is not None:
                doc[fields.image_ref] = ref
        doc_id = item.get("id") or sha
        update = job.get("mode") == "update"
        if update and job.get("dba_raw") and not job.get("vector_only"):
            doc[fields.raw_vector] = None  # a DBA raw copy of the old image goes (not augmented now)
        actions[doc_id] = document_action(job["index"], doc_id, fields.doc(doc),
                                          None if update else item.get("fields") or {})
    return list(actions.values())


def write_bulk(client: Elasticsearch, actions: list[dict], owners: dict[str, list[ImageItem]],
               final: bool = True) -> BatchResult:
    """streaming_bulk with per-item errors collected. When Elasticsearch refuses the whole
    request (400, 413), the actions are split in halves and retried until the refused ones
    stand alone: one bad document never costs its batch. Documents refused as overloaded (429,
    503) through the helper's own tries raise ClusterOverloaded, so the task sends the batch
    again later; on its ``final`` try they fail as ``retries_exhausted``. Other errors
    propagate (the task classifies them). ``owners``: the items behind each document id."""
    result, busy = _write_bulk(client, actions, owners)
    if busy and not final:
        status, message = busy[0][1]
        raise ClusterOverloaded(f"Elasticsearch refused {len(busy)} of {len(actions)} documents as overloaded "
                                f"through {BULK_RETRIES + 1} tries ({status} {message})"[:2000],
                                hint="the batch is sent again later")
    result.failures.extend(failure_for(item, "retries_exhausted", f"{status} {message} (every try)")
                           for item, (status, message) in busy)
    return result


def _write_bulk(client: Elasticsearch, actions: list[dict], owners: dict[str, list[ImageItem]]
                ) -> tuple[BatchResult, list[tuple[ImageItem, tuple[int, str]]]]:
    """write_bulk's requests: (what was written or refused for good, the items of documents
    still refused as overloaded after the helper's tries, each with its status and error)."""
    result, reported = BatchResult(), set()
    busy: list[tuple[ImageItem, tuple[int, str]]] = []
    try:
        for ok, info in streaming_bulk(client, actions, chunk_size=500, raise_on_error=False,
                                       max_retries=BULK_RETRIES, initial_backoff=BULK_BACKOFF[0],
                                       max_backoff=BULK_BACKOFF[1], retry_on_status=OVERLOADED):
            op = next(iter(info.values()))
            reported.add(op.get("_id"))
            these = owners.get(op.get("_id"), [{"ref": op.get("_id")}])
            if ok:
                result.indexed.extend(item_key(item) for item in these)
                continue
            err = op.get("error") or {}
            message = f"{err.get('type', op.get('status'))}: {err.get('reason', '')}"
            if op.get("status") in OVERLOADED:
                busy.extend((item, (op["status"], message)) for item in these)
                continue
            reason = "document_missing" if op.get("status") == 404 else "rejected_by_elasticsearch"
            result.failures.extend(failure_for(item, reason, message) for item in these)
    except ApiError as exc:
        if exc.status_code not in (400, 413):
            raise
        rest = [a for a in actions if a["_id"] not in reported]
        if len(rest) <= 1:
            result.failures.extend(failure_for(item, "rejected_by_elasticsearch", _error_text(exc))
                                   for a in rest for item in owners.get(a["_id"], [{"ref": a["_id"]}]))
            return result, busy
        for half in (rest[:len(rest) // 2], rest[len(rest) // 2:]):
            part, part_busy = _write_bulk(client, half, owners)
            result.indexed += part.indexed
            result.failures += part.failures
            busy += part_busy
    return result, busy


def _error_text(exc: ApiError) -> str:
    """The root cause Elasticsearch gave for refusing a whole request, on one line."""
    body = exc.body if isinstance(exc.body, dict) else {}
    error = body.get("error")
    err = error if isinstance(error, dict) else {}
    return f"{err.get('type', exc.status_code)}: {err.get('reason', exc.message)}"[:2000]


def _actions(job: JobSpec, items: list[ImageItem], good: list[tuple[PhotoItem, str]], vectors: np.ndarray,
             failures: list[Failure]) -> tuple[list[dict], dict[str, list[ImageItem]], list[Failure], list[Failure]]:
    """(bulk actions, items behind each document id, item failures, failures of photos of
    documents that were still indexed). A multi-photo index: one document per item, its
    photos nested; otherwise one document per image (identical images share one id)."""
    if job.get("photos_field"):
        actions, owners, item_failures = gallery_actions(job, items, good, vectors, failures)
        return actions, owners, item_failures, failures
    owners = {}
    for item, sha in good:
        owners.setdefault(item.get("id") or sha, []).append(item)
    return build_actions(job, good, vectors), owners, failures, []


def retire_refused(client: Elasticsearch, job: JobSpec, items: list[ImageItem], failed: set[str]) -> list[str]:
    """Documents whose image changed (``source_ref``: --from-index, the follower) to one that
    failed lose the vector of their earlier image (index/imageref.py)."""
    if job.get("mode") != "update" or job.get("vector_only"):
        return []
    values: dict[str, object] = {doc_id: item["source_ref"] for item in items
                                 if "source_ref" in item and (doc_id := item.get("id")) and item_key(item) in failed}
    return retire(client, job["index"], DocFields.of_record(job), values)


def process_batch(settings: Settings, client: Elasticsearch, job: JobSpec, items: list[ImageItem],
                  final: bool = True) -> BatchOutcome:
    """Check, decode, embed and write one batch; record failures (dead letters, progress) and
    clear the dead letters of images now indexed; returns counts and failures (JSON-safe).
    Not ``final`` (the task has retries left): documents Elasticsearch still refuses as
    overloaded raise ClusterOverloaded before anything is recorded (write_bulk)."""
    model = load_embedder(job["model_path"], settings.runtime, settings.device)
    if model.card["model_id"] != job["model_id"]:
        raise MappingMismatch(f"model file {job['model_path']} is now {model.card['model_id']}, but "
                              f"the index serves {job['model_id']}", hint="restore the model file")
    check_runtime(model, job.get("runtime"), job.get("runtime_parity"), job.get("runtime_variant"))
    limits = DecodeLimits(settings.max_image_pixels, settings.max_image_bytes)
    usable, refused = check_items(items, DocFields.of_record(job))
    kept, photos, refused_more = expand(usable, bool(job.get("photos_field")))
    roots = settings.image_roots + job_roots(job)
    good, failures, vectors = decode_and_embed(photos, model, limits, roots,
                                               policy=FetchPolicy.from_settings(settings))
    actions, owners, failures, photo_failures = _actions(job, kept, good, vectors, failures)
    actions = read_leaves(client, job, actions)  # a model change in place on nested photos
    result = write_bulk(client, actions, owners, final)
    result.failures = refused + refused_more + failures + result.failures
    record_failures(client, settings, job, result.failures + photo_failures)
    failed = [record_key(f) for f in result.failures]
    indexed = set(result.indexed)
    cleared = indexed | {item_key(p) for p, _ in good if item_key(kept[p["doc"]]) in indexed}
    # a document indexed without its first photo: that photo's dead letter stays
    photo_keys = {record_key(f) for f in photo_failures}
    clear_failures(client, settings, job, sorted(cleared - set(failed) - photo_keys))
    retire_refused(client, job, usable, set(failed))
    JobProgress(settings, job["job_id"]).record(result.indexed, failed)
    log.info("job %s: batch of %d -> %d indexed, %d failed", job["job_id"], len(items),
             len(result.indexed), len(result.failures))
    return result.as_dict()
