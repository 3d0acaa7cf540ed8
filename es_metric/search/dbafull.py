"""`esm dba INDEX --full`: every document augmented again from raw vectors, off-peak.

The same blocks as the incremental pass (search/dba.py), over every document with a vector:
kNN by raw vector for each, exact similarities, blend, write. Memory: one block and its
neighbours' vectors, never N x N. Cost: one kNN search per document, O(N log N).

Resumable: the pass records itself in the index's ``_meta.es_metric.dba_full`` (its run id, k,
alpha) and stamps every document it writes with that run id (the marker's ``run``, a keyword).
After a kill, the next ``--full`` with the same k and alpha carries on with the same run: it
selects only the documents not stamped yet. The record goes when the pass ends.
"""
from __future__ import annotations

import datetime as dt
import logging
from typing import Any, Callable

from elasticsearch import Elasticsearch

from ..index.dbafields import DbaFields
from .dba import BLOCK, Pass, blocks, meta_of, recompute, remember, start, summary, update_meta, write

log = logging.getLogger(__name__)
RECORD = "dba_full"
Progress = Callable[[int, int], None]


def stamped(fields: DbaFields, run: str) -> dict[str, Any]:
    return {"term": {f"{fields.marker}.run": run}}


def todo(fields: DbaFields, run: str) -> dict[str, Any]:
    """Documents with a vector that the run has not written yet."""
    return {"bool": {"filter": [{"exists": {"field": fields.vector}}], "must_not": [stamped(fields, run)]}}


def resume_or_begin(p: Pass) -> bool:
    """Take over the run an interrupted full pass recorded (same k and alpha), else record this
    one; True when resuming."""
    prev = (meta_of(p.client, p.info.concrete).get("es_metric") or {}).get(RECORD) or {}
    if prev.get("run") and int(prev.get("k", 0)) == p.k and float(prev.get("alpha", -1)) == p.alpha:
        p.run = prev["run"]
        return True
    update_meta(p.client, p.info.concrete, **{RECORD: {
        "run": p.run, "k": p.k, "alpha": p.alpha,
        "started_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}})
    return False


def rebuild(client: Elasticsearch, index: str, *, k: int | None = None, alpha: float | None = None,
            candidates: int | None = None, block: int = BLOCK, on_progress: Progress | None = None) -> dict[str, Any]:
    """Augment every document of ``index`` again; resumes an interrupted run. Returns the counts,
    ``resumed`` and ``already_done`` (documents the interrupted run had written)."""
    p = start(client, index, k, alpha, candidates, full=True)
    resumed = resume_or_begin(p)
    client.indices.refresh(index=p.info.concrete)
    total = int(client.count(index=p.info.concrete, query={"exists": {"field": p.fields.vector}})["count"])
    before = int(client.count(index=p.info.concrete, query=stamped(p.fields, p.run))["count"])
    if on_progress:
        on_progress(before, total)
    for docs in blocks(client, p.info, p.fields, todo(p.fields, p.run), block):
        write(p, recompute(p, docs, p.stamp()))
        p.counts["documents"] += len(docs)
        if on_progress:
            on_progress(before + p.counts["documents"], total)
    client.indices.refresh(index=p.info.concrete)
    update_meta(client, p.info.concrete, **{RECORD: None})
    remember(p)
    log.info("dba --full: %d documents of %s augmented (%d before an interruption)",
             p.counts["documents"], p.info.concrete, before)
    return {**summary(p), "resumed": resumed, "already_done": before, "total": total}
