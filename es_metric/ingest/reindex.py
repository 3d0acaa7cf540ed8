"""Blue/green reindex when the model changes.

1. create ``<alias>-<new model id>`` (the alias keeps serving the old index);
2. copy every document without its vector, with point-in-time + search_after + bulk (the
   ``_reindex`` API is not on every cluster);
3. re-embed every image through the Celery workers (``update`` by id);
4. catch up with writes made to the old index meanwhile (by users through the alias, or by
   ingest jobs): wait for open ingest jobs on the old index, then copy and re-embed every
   document whose ``_seq_no`` moved past the checkpoint taken before the previous pass, and
   delete what was deleted; repeat until a pass finds nothing;
5. verify document and vector counts; only then swap the alias in one atomic request; then one
   last catch-up pass for writes that reached the old index just before the swap.

The new index records ``reindex_state`` in its ``_meta``: an interrupted run is resumed by
running the command again, or abandoned with ``--abandon``. The old index stays until
``--delete-old``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

from elasticsearch import Elasticsearch
from elasticsearch.helpers import streaming_bulk

from ..config import Settings
from ..errors import EsmError, IndexStateError, JobStalled
from ..index.fields import DocFields
from ..index.indices import IndexInfo, count, index_info
from ..index.mappings import IndexOptions, index_meta, new_index_body, versioned_name
from ..index.record import update_record
from ..index.scan import scroll_documents
from ..model.card import gate_allows
from ..paths import as_roots
from ..types import ImageItem, ModelCard, ReindexState
from .enqueue import Job, enqueue, wait
from .sources import Source

log = logging.getLogger(__name__)


@dataclass
class ReindexResult:
    alias: str
    old_index: str
    new_index: str
    documents: int
    vectors: int
    failed: int
    swapped: bool
    deleted_old: bool
    caught_up: int = 0    # documents written to the old index during the run, copied afterwards
    removed: int = 0      # documents deleted from the old index during the run


MAX_CATCH_UP_PASSES = 5


def model_fields(old: IndexInfo) -> list[str]:
    """The old model's vector and what a DBA pass derived from it: not copied."""
    return [old.fields.vector, *old.fields.dba_derived]


def _user_properties(client: Elasticsearch, old: IndexInfo) -> dict:
    props = client.indices.get_mapping(index=old.concrete)[old.concrete]["mappings"].get("properties", {})
    return {k: v for k, v in props.items() if k not in old.fields.reserved}  # es-metric's: anew


def _index_options(client: Elasticsearch, old: IndexInfo, card: ModelCard) -> IndexOptions:
    props = client.indices.get_mapping(index=old.concrete)[old.concrete]["mappings"]["properties"]
    opts = DocFields.mapping_of(props, old.vector_field).get("index_options") or {}
    kind = opts.get("type", "hnsw")
    if kind.startswith("bbq") and int(card["dims"]) < 64:
        kind = "int8_hnsw"
    oversample = (opts.get("rescore_vector") or {}).get("oversample", 0)  # as the old index had it
    return IndexOptions(kind, opts.get("m", 16), opts.get("ef_construction", 100), oversample)


def prepare_target(client: Elasticsearch, old: IndexInfo, card: ModelCard, model_path: str) -> str:
    """Create (or find, when resuming) the new versioned index, marked as building."""
    name = versioned_name(old.name, card["model_id"])
    if client.indices.exists(index=name):
        log.info("resuming reindex into %s", name)
        return name
    body = new_index_body(card, model_path, vector_field=old.fields,   # the same layout
                          options=_index_options(client, old, card))
    body["mappings"]["properties"].update(_user_properties(client, old))
    meta = index_meta(card, model_path, old.fields)
    meta["es_metric"]["reindex_state"] = {"state": "building", "from": old.concrete}
    body["mappings"]["_meta"] = meta
    settings = client.indices.get_settings(index=old.concrete)[old.concrete]["settings"]["index"]
    body["settings"]["number_of_replicas"] = int(settings.get("number_of_replicas", 0))
    client.indices.create(index=name, settings=body["settings"], mappings=body["mappings"])
    return name


def copy_hits(client: Elasticsearch, hits: Iterable[dict], target: str, fields: DocFields) -> list[ImageItem]:
    """Copy documents (their vector already left out) into ``target``; returns the re-embed
    items (id + image path, or every photo of a multi-photo document) seen on the way."""
    items: list[ImageItem] = []

    def actions():
        for hit in hits:
            src = hit["_source"]
            refs = fields.layout.photo_refs(src)
            if fields.photos:
                fields.pop(src, fields.photos)
            path = fields.read(src, fields.image_path)
            if refs:
                items.append({"ref": refs[0], "refs": refs, "id": hit["_id"], "fields": {}})
            elif isinstance(path, str) and path:
                items.append({"ref": path, "id": hit["_id"], "fields": {}})
            fields.pop(src, fields.model_id)
            yield {"_op_type": "index", "_index": target, "_id": hit["_id"], "_source": src}

    for ok, info in streaming_bulk(client, actions(), chunk_size=500, max_retries=5, raise_on_error=True):
        if not ok:
            raise IndexStateError(f"copy into {target} failed: {info}")
    client.indices.refresh(index=target)
    return items


def copy_documents(client: Elasticsearch, old: IndexInfo, target: str) -> list[ImageItem]:
    """Copy every document's non-vector fields; returns the re-embed items."""
    return copy_hits(client, scroll_documents(client, old.concrete, model_fields(old)), target,
                     old.fields)


def primary_checkpoints(client: Elasticsearch, index: str) -> dict[str, int]:
    """The highest sequence number of each primary shard: every write so far is at or below."""
    stats = client.indices.stats(index=index, level="shards")["indices"][index]["shards"]
    return {shard: next(c["seq_no"]["max_seq_no"] for c in copies if c["routing"]["primary"])
            for shard, copies in stats.items()}


def changed_since(client: Elasticsearch, index: str, since: dict[str, int], excludes: list[str],
                  page: int = 500, includes: list[str] | None = None,
                  until: dict[str, int] | None = None) -> Iterator[dict]:
    """Documents written (created or updated) after ``since`` (and at or before ``until``, the
    checkpoints the caller stores next: a later write is read once, by the next caller), shard
    by shard, in ``_seq_no`` order. Sequence numbers are per shard: each shard has its bounds."""
    client.indices.refresh(index=index)
    fields: dict[str, Any] = {"source_includes": includes} if includes is not None else {"source_excludes": excludes}
    for shard, seq in since.items():
        after: list[Any] | None = None
        bounds = {"gt": seq} if until is None else {"gt": seq, "lte": until[shard]}
        while True:
            kw: dict[str, Any] = {"search_after": after} if after else {}
            resp = client.search(index=index, preference=f"_shards:{shard}", size=page,
                                 query={"range": {"_seq_no": bounds}}, sort=[{"_seq_no": "asc"}],
                                 track_total_hits=False, **fields, **kw)
            hits = resp["hits"]["hits"]
            if not hits:
                break
            yield from hits
            after = hits[-1]["sort"]


def document_ids(client: Elasticsearch, index: str) -> set[str]:
    return {hit["_id"] for hit in scroll_documents(client, index, [], source=False, page=5000)}


def written_after(client: Elasticsearch, index: str, ids: Iterable[str], since: dict[str, int]) -> set[str]:
    """Which of ``ids`` were written to ``index`` after ``since`` (per-shard checkpoints)."""
    ids, found = list(ids), set()
    client.indices.refresh(index=index)
    for shard, seq in since.items():
        for i in range(0, len(ids), 1000):
            resp = client.search(index=index, preference=f"_shards:{shard}", size=1000, source=False,
                                 query={"bool": {"filter": [{"ids": {"values": ids[i:i + 1000]}},
                                                            {"range": {"_seq_no": {"gt": seq}}}]}})
            found |= {hit["_id"] for hit in resp["hits"]["hits"]}
    return found


def remove_deleted(client: Elasticsearch, old: str, target: str,
                   live_since: dict[str, int] | None = None) -> int:
    """Delete from ``target`` the documents that no longer exist in ``old``; once ``target`` is
    live, documents written to it after ``live_since`` are new, not deleted, and stay."""
    client.indices.refresh(index=old)
    client.indices.refresh(index=target)
    if live_since is None and count(client, target) <= count(client, old):
        return 0  # target holds every id of old (all were copied), so no extra id means no deletion
    gone = document_ids(client, target) - document_ids(client, old)
    if gone and live_since is not None:
        gone -= written_after(client, target, gone, live_since)
    if gone:
        for ok, info in streaming_bulk(client, ({"_op_type": "delete", "_index": target, "_id": i}
                                                for i in gone), raise_on_error=False, max_retries=5):
            if not ok and next(iter(info.values())).get("status") != 404:
                raise IndexStateError(f"could not remove a deleted document from {target}: {info}")
        client.indices.refresh(index=target)
    return len(gone)


def wait_for_writers(settings: Settings, index: str, timeout: float | None) -> None:
    """Let ingest jobs still writing into ``index`` (with the old model) finish first."""
    from .stall import open_jobs

    for job_id, total in open_jobs(settings, index).items():
        log.info("waiting for ingest job %s into %s to finish", job_id, index)
        try:
            wait(settings, Job(job_id, total, index, 0), timeout=timeout)
        except JobStalled as exc:  # a dead writer writes nothing more: catch up without it
            log.warning("not waiting any longer for ingest job %s: %s", job_id, exc.message)


def _with_roots(client: Elasticsearch, old: IndexInfo, items: list[ImageItem]) -> Source:
    """Re-embed items may be read under the roots recorded for the old index (read now:
    ingest jobs may have added some during the run); the new index records them too."""
    return Source(items, [], as_roots(index_info(client, old.concrete).image_roots))


@dataclass
class CatchUp:
    since: dict[str, int]
    copied: int = 0
    deleted: int = 0
    failed: int = 0


def catch_up(settings: Settings, client: Elasticsearch, old: IndexInfo, target: str, alias: str,
             since: dict[str, int], timeout: float | None,
             live_since: dict[str, int] | None = None, old_count: int | None = None) -> CatchUp:
    """One pass: copy and re-embed what changed in ``old`` after ``since``, remove deletions.
    ``live_since``: ``target`` already serves the alias; what was written to it after these
    checkpoints is newer than anything in ``old`` and is left alone. ``old_count``: the number
    of documents ``old`` had at ``since``; if nothing changed and the count is the same, nothing
    was deleted either, and the id scans are skipped."""
    wait_for_writers(settings, old.concrete, timeout)
    now = primary_checkpoints(client, old.concrete)
    changed = hits = list(changed_since(client, old.concrete, since, model_fields(old)))
    if hits and live_since is not None:
        newer = written_after(client, target, [h["_id"] for h in hits], live_since)
        hits = [h for h in hits if h["_id"] not in newer]
    items = copy_hits(client, hits, target, old.fields) if hits else []
    result = CatchUp(now, copied=len(hits))
    quiet = not changed and old_count is not None and count(client, old.concrete) == old_count
    result.deleted = 0 if quiet else remove_deleted(client, old.concrete, target, live_since)
    if items:
        job = enqueue(settings, client, alias, _with_roots(client, old, items), mode="update",
                      target=target)
        result.failed = wait(settings, job, timeout=timeout)[1]
    return result


def vectors_in(client: Elasticsearch, index: str, fields: DocFields) -> int:
    client.indices.refresh(index=index)
    return int(client.count(index=index, query=fields.has_vector())["count"])


def swap_alias(client: Elasticsearch, alias: str, old: str, new: str) -> None:
    """One atomic request: readers see the old index or the new one, never neither or both."""
    client.indices.update_aliases(actions=[{"remove": {"index": old, "alias": alias}},
                                           {"add": {"index": new, "alias": alias}}])


def _mark(client: Elasticsearch, index: str, state: ReindexState) -> None:
    def mark(mine: dict[str, Any], _mappings: dict[str, Any]) -> None:
        mine["reindex_state"] = {**(mine.get("reindex_state") or {}), "state": state}
    update_record(client, index, mark)


def in_place(client: Elasticsearch, name: str) -> bool:
    """Is ``name`` an index es-metric does not own (no alias): its model changes in place."""
    info = index_info(client, name)
    return info.name == info.concrete


def reindex(settings: Settings, client: Elasticsearch, alias: str, model_path: str, card: ModelCard, *,
            force: bool = False, delete_old: bool = False, timeout: float | None = None,
            on_progress: Callable[[int, int, int], None] | None = None) -> ReindexResult:
    old = index_info(client, alias)
    if old.name == old.concrete:
        raise IndexStateError(f"{alias!r} is an index, not an alias", hint="reindex works on es-metric aliases")
    if card["model_id"] == old.model_id:
        raise IndexStateError(f"{alias} already serves {old.model_id}")
    gate_allows(card, force)
    target = prepare_target(client, old, card, model_path)
    since = primary_checkpoints(client, old.concrete)  # before the snapshot: nothing is missed
    items = copy_documents(client, old, target)
    job = enqueue(settings, client, alias, _with_roots(client, old, items), mode="update",
                  target=target)
    failed = wait(settings, job, on_progress=on_progress, timeout=timeout)[1]
    caught_up = removed = 0
    for _ in range(MAX_CATCH_UP_PASSES):
        step = catch_up(settings, client, old, target, alias, since, timeout)
        since, caught_up, removed = step.since, caught_up + step.copied, removed + step.deleted
        failed += step.failed
        docs_old, docs_new = count(client, old.concrete), count(client, target)
        if not (step.copied or step.deleted) and docs_old == docs_new:
            break
    missing = without_vector(client, target, old.fields)
    if docs_new != docs_old or (missing and not force):
        raise IndexStateError(
            f"verification failed: {docs_new}/{docs_old} documents copied, {missing} images not "
            f"re-embedded ({failed} failures); the alias still points at {old.concrete}",
            hint=f"see `esm failures {alias}`, then run the command again (it resumes), "
                 "pass --force to accept the failures, or --abandon")
    live_since = primary_checkpoints(client, target)
    swap_alias(client, alias, old.concrete, target)
    _mark(client, target, "live")
    try:  # writes that reached the old index between the last pass and the swap
        step = catch_up(settings, client, old, target, alias, since, timeout, live_since, docs_old)
    except EsmError as exc:
        raise IndexStateError(
            f"{alias} now serves {target}, but the last catch-up pass failed: {exc.message}",
            hint=f"documents written to {old.concrete} just before the swap may be missing from "
                 f"{target}; the old index is kept: compare the two before deleting it") from None
    caught_up, removed, failed = caught_up + step.copied, removed + step.deleted, failed + step.failed
    if delete_old:
        client.indices.delete(index=old.concrete)
    return ReindexResult(alias, old.concrete, target, count(client, target),
                         vectors_in(client, target, old.fields), failed, True, delete_old,
                         caught_up, removed)


def without_vector(client: Elasticsearch, index: str, fields: DocFields) -> int:
    """Documents that have an image but (still) no vector."""
    return int(client.count(index=index, query={"bool": {
        "filter": [{"exists": {"field": fields.image_path}}],
        "must_not": [fields.has_vector()]}})["count"])


def abandon(client: Elasticsearch, alias: str, model_id: str) -> str:
    """Delete a half-built target index (never the one the alias points at)."""
    name = versioned_name(alias, model_id)
    if client.indices.exists_alias(name=alias, index=name):
        raise IndexStateError(f"{name} is live behind {alias}; refusing to delete it")
    client.options(ignore_status=404).indices.delete(index=name)
    return name
