"""The worker's job: decode a batch of images, embed them together, bulk-write the vectors.

A bad image becomes a failure record with a reason and never costs the rest of its batch.
Document ids are the user's id or the image's content hash, so a redelivered batch rewrites
the same documents. Progress is kept in Redis sets keyed by image reference (idempotent).
"""
from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from elasticsearch import Elasticsearch
from elasticsearch.helpers import streaming_bulk

from .config import Settings
from .embed import embed_tensors, normalise, pixel_batch, to_pixels
from .encoder import Preprocess
from .errors import EsmError, ImageError, MappingMismatch
from .images import DecodeLimits, load_image
from .index import ensure_failures_index
from .modelfile import cached_model
from .progress import JobProgress

log = logging.getLogger(__name__)

# Decode threads per worker process, and whether they run ahead of the model (see
# decode_and_embed). None: overlap only when torch runs single-threaded (several worker
# processes share the cores). With one process using every core, alternating wins: decode
# threads would preempt torch's threads at their barriers (bench/embed.py, MobileNetV3 on 2
# cores: 1.01 vs 0.90 of the bare forward pass).
DECODE_THREADS = 2
OVERLAP: bool | None = None

@dataclass
class BatchResult:
    indexed: list[str] = field(default_factory=list)     # refs
    failures: list[dict] = field(default_factory=list)   # {ref, reason, message, doc_id}

    def as_dict(self) -> dict:
        return {"indexed": len(self.indexed), "failed": len(self.failures),
                "failures": self.failures}


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


_pool: ThreadPoolExecutor | None = None
_pool_key: tuple[int, int] | None = None


def decode_pool(threads: int) -> ThreadPoolExecutor:
    """The process's decode threads, made on first use after fork (each Celery prefork child
    gets its own) and kept: no pool start-up per batch."""
    global _pool, _pool_key
    if _pool is None or _pool_key != (os.getpid(), threads):
        _pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="esm-decode")
        _pool_key = (os.getpid(), threads)
    return _pool


def prepare_item(item: dict, limits: DecodeLimits, pre: Preprocess, roots: tuple[Path, ...] = ()):
    """(item, uint8 3 x S x S pixels, sha256, None) or (item, None, None, failure record).
    Read, safe decode (JPEG draft), centre-crop + resize: GIL-free work for the decode threads."""
    try:
        if roots:
            from .sources import confine
            confine(item["ref"], Path("/"), roots)
        img, sha = load_image(item["ref"], limits, draft=pre.size)
        return item, to_pixels(img, pre.size), sha, None
    except ImageError as exc:
        return item, None, None, {"ref": item["ref"], "reason": exc.reason, "message": exc.message}
    except EsmError as exc:
        return item, None, None, {"ref": item["ref"], "reason": "path_refused", "message": exc.message}
    except Exception as exc:  # an unknown decoder failure must not cost the batch
        return item, None, None, {"ref": item["ref"], "reason": "decode_error",
                                  "message": f"{type(exc).__name__}: {exc}"}


def decode_and_embed(items: list[dict], model, limits: DecodeLimits, roots: tuple[Path, ...] = (),
                     sub_batch: int = 16, decode_threads: int = DECODE_THREADS,
                     overlap: bool | None = OVERLAP):
    """(good [(item, sha)], failures, vectors) for all items, in order.

    ``overlap``: hand every item to the decode threads at once, so they decode ahead while the
    model embeds earlier sub-batches. Otherwise decode one sub-batch (all decode threads), then
    embed it (all torch threads), alternately: when the cores are fully used by both phases,
    that avoids decode threads preempting torch's threads at their barriers."""
    if overlap is None:
        overlap = torch.get_num_threads() == 1
    pool = decode_pool(decode_threads)

    def submit(chunk: list[dict]):
        return [pool.submit(prepare_item, item, limits, model.preprocess, roots) for item in chunk]

    ahead = submit(items) if overlap else None
    good, failures, vectors = [], [], [np.zeros((0, model.encoder.dim), np.float32)]
    for i in range(0, len(items), sub_batch):
        futures = ahead[i:i + sub_batch] if overlap else submit(items[i:i + sub_batch])
        ready = [f.result() for f in futures]
        failures += [err for *_, err in ready if err is not None]
        ok = [(item, px, sha) for item, px, sha, err in ready if err is None]
        if ok:
            batch = normalise(pixel_batch([px for _, px, _ in ok]), model.preprocess)
            vectors.append(embed_tensors(model.encoder, batch, sub_batch))
            good += [(item, sha) for item, _, sha in ok]
    return good, failures, np.concatenate(vectors)


def build_actions(job: dict, good: list[tuple[dict, str]], vectors: np.ndarray):
    """Bulk actions: ``index`` a full document, or ``update`` an existing one (by id)."""
    stamp = _now()
    for (item, sha), vec in zip(good, vectors):
        doc = {job["vector_field"]: vec.astype(float).round(7).tolist(), "image_path": item["ref"],
               "image_sha256": sha, "model_id": job["model_id"], "indexed_at": stamp}
        doc_id = item.get("id") or sha
        if job.get("mode") == "update":
            yield {"_op_type": "update", "_index": job["index"], "_id": doc_id, "doc": doc}
        else:
            yield {"_op_type": "index", "_index": job["index"], "_id": doc_id,
                   **item.get("fields", {}), **doc}


def write_bulk(client: Elasticsearch, actions: list[dict], refs: dict[str, list[str]]) -> BatchResult:
    """streaming_bulk with per-item errors collected; transport errors propagate (task retries)."""
    result = BatchResult()
    for ok, info in streaming_bulk(client, actions, chunk_size=500, raise_on_error=False,
                                   max_retries=5, initial_backoff=1, max_backoff=30):
        op = next(iter(info.values()))
        these = refs.get(op.get("_id"), [op.get("_id")])
        if ok:
            result.indexed.extend(these)
            continue
        err = op.get("error") or {}
        reason = "document_missing" if op.get("status") == 404 else "rejected_by_elasticsearch"
        message = f"{err.get('type', op.get('status'))}: {err.get('reason', '')}"
        result.failures.extend({"ref": ref, "reason": reason, "doc_id": op.get("_id"),
                                "message": message} for ref in these)
    return result


def record_failures(client: Elasticsearch, settings: Settings, job: dict, failures: list[dict]) -> None:
    """Dead-letter records in the failures index (one per index + image; rewrites are idempotent)."""
    if not failures:
        return
    ensure_failures_index(client, settings.failures_index)
    actions = [{"_op_type": "index", "_index": settings.failures_index,
                "_id": hashlib.sha1(f"{job['alias']}\x00{f['ref']}".encode()).hexdigest(),
                "index": job["alias"], "job_id": job["job_id"], "model_id": job["model_id"],
                "at": _now(), **f} for f in failures]
    for ok, info in streaming_bulk(client, actions, raise_on_error=False, max_retries=5):
        if not ok:
            log.error("could not record failure: %s", info)


def process_batch(settings: Settings, client: Elasticsearch, job: dict, items: list[dict]) -> dict:
    """Decode, embed and write one batch; returns counts and failures (JSON-safe)."""
    model = cached_model(job["model_path"])
    if model.model_id != job["model_id"]:
        raise MappingMismatch(f"model file {job['model_path']} is now {model.model_id}, but the "
                              f"index serves {job['model_id']}", hint="restore the model file")
    limits = DecodeLimits(settings.max_image_pixels, settings.max_image_bytes)
    good, failures, vectors = decode_and_embed(items, model, limits, settings.image_roots)
    refs: dict[str, list[str]] = {}
    for item, sha in good:  # identical images share one document id
        refs.setdefault(item.get("id") or sha, []).append(item["ref"])
    result = write_bulk(client, list(build_actions(job, good, vectors)), refs)
    result.failures = failures + result.failures
    record_failures(client, settings, job, result.failures)
    JobProgress(settings, job["job_id"]).record(result.indexed, [f["ref"] for f in result.failures])
    log.info("job %s: batch of %d -> %d indexed, %d failed", job["job_id"], len(items),
             len(result.indexed), len(result.failures))
    return result.as_dict()
