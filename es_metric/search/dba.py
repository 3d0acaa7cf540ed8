"""Database-side augmentation (DBA): each document's searched vector is its raw vector blended
with its k nearest neighbours' raw vectors (rerank.blend_rows), so a product's photos move
toward each other. Incremental: the cost of a pass follows what changed, not the index.

A pass augments the documents not augmented yet (an ingest: the ones it wrote), in blocks:

1. one kNN search per new document, over the augmented documents' raw vectors (dbaknn: the
   index's own HNSW graph), for its REACH x k nearest (ids, kNN scores, markers' ``k`` and
   ``kth``; no vectors). Its k nearest: the best of the first k of them and of the block's
   other new documents, with exact similarities from raw vectors; its augmented vector from them;
2. the existing documents it entered: among those REACH x k, each ``e`` whose k-th neighbour
   is less similar to ``e`` than the new document is (the marker keeps that similarity,
   ``kth``). Only their neighbour lists changed, so only they are recomputed: the k best of
   the list their marker keeps and the block's new documents (dbamerge: raw vectors read by
   id, no search); a kNN search (both kinds of documents) only where the marker keeps no list
   that still holds (older markers, a listed document deleted or re-embedded);
3. both written, with the raw vector and the marker (with the list); an entered document only
   if its version is still the one read (else it is searched again), and not at all when the
   merge left its list as it was. A document's augmented vector depends only on raw vectors,
   so nothing compounds, in any order.

A new document not augmented yet outside the pass (an ingest with ``--no-dba``, another job) is
in no new document's list until a pass augments it; then it enters theirs (step 2), so the
index still ends as a full pass would.

Documents written per pass <= (k + 1) x new documents: at most k existing ones per new document
(the closest entries first; any beyond are counted as ``deferred`` and left to `esm dba --full`).
The budget is the pass's, not a block's: a block may use what earlier ones left, and a pass in
steps along a job (dbaingest) what the job's images not yet written will bring (``planned``).
What can differ from a full pass: a true neighbour HNSW did not return (``num_candidates``
wide), an existing document that a new one entered but that is not among the new one's
``reach`` x k nearest, and deletions (documents that lost a neighbour keep their vector).
Memory: one block of documents and their neighbours' vectors. Between blocks the index is
refreshed, so the next block reads the lists the previous one wrote.
"""
from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np
from elasticsearch import Elasticsearch
from elasticsearch.helpers import scan, streaming_bulk

from ..errors import IndexStateError
from ..index.dbafields import DbaFields, augmented_doc, dba_bodies, marker, raw_state
from ..index.fields import DocFields
from ..index.indices import IndexInfo, index_info
from ..index.record import set_keys
from ..index.vectors import hit_vector
from ..similarity import Metric
from ..types import ReRank
from .dbaknn import Marked, Neighbour, exact_top, find_neighbours, read_marked, read_raw
from .dbamerge import Top, entered, listed, merged_top, new_top
from .rerank import blend_rows

log = logging.getLogger(__name__)

DEFAULT_K = 10
BLOCK = 200          # documents augmented per block (memory: their neighbours' vectors and ids)
REACH = 10           # a new document looks for the existing ones it entered among its REACH x k nearest
SINCE_SLACK_S = 60   # an ingest's window opens this long before its job (worker clocks may differ)
Progress = Callable[[int], None]


def recorded(info: IndexInfo) -> ReRank:
    """The re-ranking the index recorded from its model card (older indices: the model file)."""
    if info.rerank is not None:
        return ReRank.from_dict(info.rerank)
    from ..model.modelfile import cached_model

    return ReRank.from_dict(cached_model(info.model_path).card.get("rerank"))


def card_setting(info: IndexInfo) -> tuple[int, float]:
    """(k, alpha) the index's model card records for DBA (DEFAULT_K when it records none)."""
    rr = recorded(info)
    return rr.dba_k or DEFAULT_K, rr.dba_alpha


def owned(info: IndexInfo) -> bool:
    """An index es-metric made (``<alias>-<model id>``), not a shop's index it added vectors to."""
    return info.concrete.endswith(f"-{info.model_id}")


def runs_after_ingest(info: IndexInfo) -> bool:
    """Does an ingest augment what it wrote? What the index recorded at mapping create (a shop's
    index: only with ``--dba``); older indices: es-metric's own when the card asks."""
    if info.photos_field:  # one vector per photo: DBA blends documents' vectors, not photos'
        return False
    return info.dba if info.dba is not None else owned(info) and recorded(info).dba_k > 0


def check_allowed(client: Elasticsearch, info: IndexInfo) -> tuple[DbaFields, dict[str, Any]]:
    """The index's DBA fields (mapped now if they were not) and its es-metric ``_meta``;
    IndexStateError where a pass may not or cannot write."""
    if info.photos_field:
        raise IndexStateError(f"{info.name} keeps several photos per document; DBA works on one "
                              "vector per document", hint="search it without DBA")
    if not info.dba and not owned(info):
        raise IndexStateError(f"{info.name} is an existing index whose documents DBA may not write to",
                              hint=f"allow it with `esm mapping create {info.name} --model MODEL "
                                   "--existing --dba`")
    fields = DbaFields.of(info.fields)  # beside the vector: under a shop index's es-metric object
    mapping = client.indices.get_mapping(index=info.concrete)[info.concrete]["mappings"]
    props = mapping.get("properties", {})
    if raw_state(props, fields) == "unindexed":
        raise IndexStateError(f"{info.name} keeps raw vectors from before incremental DBA, not "
                              f"indexed for kNN ({fields.raw})", hint="rebuild it: `esm mapping create` "
                              "a new index and `esm ingest` the images again")
    bodies = dba_bodies(fields, DocFields.mapping_of(props, fields.vector))
    missing = {path: body for path, body in bodies.items() if not DocFields.mapping_of(props, path)}
    if missing:
        client.indices.put_mapping(index=info.concrete, properties=DocFields.properties_at(missing))
    return fields, (mapping.get("_meta") or {}).get("es_metric") or {}


@dataclass
class Pass:
    """What one pass works with, and what it did."""

    client: Elasticsearch
    info: IndexInfo
    fields: DbaFields
    k: int
    alpha: float
    candidates: int | None  # kNN num_candidates; None: see ``wide``
    run: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    planned: int = 0  # new documents the pass expects in all (a pass in steps: the job's images)
    counts: dict[str, Any] = field(default_factory=lambda: {"documents": 0, "neighbours": 0, "searched": 0,
                                                  "deferred": 0, "written": 0, "failed": 0})
    started: float = field(default_factory=time.monotonic)

    @property
    def metric(self) -> Metric:
        return Metric(self.info.similarity)

    def wide(self, fetch: int) -> int:
        """num_candidates for a kNN fetching ``fetch``: 10 x the k + 1 a neighbour list needs, as
        search does (at least 100, at least 2 x ``fetch``), times a quantised field's oversample."""
        wide = max(100, 2 * fetch, 10 * (self.k + 1))
        return self.candidates or int(wide * self.info.candidates_factor)

    def stamp(self) -> str:
        return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


def raw_of_hit(hit: dict[str, Any], fields: DbaFields) -> np.ndarray | None:
    vec = hit_vector(hit, fields.raw) or hit_vector(hit, fields.vector)
    return None if vec is None else np.asarray(vec, np.float32)


def blocks(client: Elasticsearch, info: IndexInfo, fields: DbaFields, query: dict[str, Any],
           size: int = BLOCK) -> Iterator[list[tuple[str, np.ndarray]]]:
    """The documents ``query`` selects, (id, raw vector) in blocks: one scroll, bounded memory."""
    block: list[tuple[str, np.ndarray]] = []
    for hit in scan(client, index=info.concrete, size=size, _source=False,
                    query={"query": query, "docvalue_fields": [fields.vector, fields.raw]}):
        vec = raw_of_hit(hit, fields)
        if vec is not None:
            block.append((hit["_id"], vec))
        if len(block) >= size:
            yield block
            block = []
    if block:
        yield block


def search(p: Pass, docs: list[tuple[str, np.ndarray]], fetch: int,
           augmented_only: bool = False) -> list[list[Neighbour]]:
    """Each document's ``fetch`` nearest by raw vector (ids, similarities, markers' k and kth)."""
    return find_neighbours(p.client, p.info.concrete, p.fields, np.stack([v for _, v in docs]),
                           fetch, p.wide(fetch), p.metric, augmented_only)


def raw_vectors(p: Pass, docs: list[tuple[str, np.ndarray]], ids: set[str]) -> dict[str, Any]:
    """{id: (raw vector, augmented?)}: ``docs`` as given, the other ``ids`` read from the index."""
    known = {i: (v, False) for i, v in docs}
    known.update(read_raw(p.client, p.info.concrete, p.fields, sorted(ids - set(known))))
    return known


def augment_rows(p: Pass, docs: list[tuple[str, np.ndarray]], rows: list[list[Neighbour]],
                 at: str) -> list[dict[str, Any]]:
    """Update actions: each (id, raw vector) blended with its k nearest, chosen exactly (from
    the raw vectors) among the first k + 1 of its kNN row (itself included there)."""
    known = raw_vectors(p, docs, {h.id for row in rows for h in row[:p.k + 1]})
    out = []
    for (doc_id, vec), row in zip(docs, rows):
        ids = [h.id for h in row[:p.k + 1] if h.id in known and h.id != doc_id]
        cand = np.stack([known[i][0] for i in ids]) if ids else np.zeros((0, len(vec)), np.float32)
        out.append(action(p, doc_id, vec, exact_top(vec, ids, cand, p.k, p.metric, exclude=doc_id), at))
    return out


def action(p: Pass, doc_id: str, raw: np.ndarray, top: Top, at: str, read: Marked | None = None) -> dict[str, Any]:
    """The update of one document from its k nearest ``top``; ``read``: the version its list
    was read from, which the write must still find (else it is not written, see ``write``)."""
    ids, sims, vecs = top
    aug = blend_rows(raw[None], vecs[None], sims[None], p.alpha, p.metric)[0]
    mark = marker(p.k, p.alpha, float(sims[-1]) if len(sims) else float("-inf"), p.run, at, ids)
    doc = augmented_doc(p.fields, aug.astype(float).round(7).tolist(), raw.astype(float).round(7).tolist(), mark)
    out: dict[str, Any] = {"_op_type": "update", "_index": p.info.concrete, "_id": doc_id, "doc": doc}
    if read is not None and read.seq_no is not None:
        out.update(if_seq_no=read.seq_no, if_primary_term=read.primary_term)
    return out


def write(p: Pass, actions: list[dict[str, Any]]) -> list[str]:
    """Bulk the updates; returns the ids written by someone else since they were read (not
    written here)."""
    changed = []
    for ok, item in streaming_bulk(p.client, actions, chunk_size=500, raise_on_error=False, max_retries=5):
        result = next(iter(item.values()))
        if not ok and result.get("status") == 409:
            changed.append(result["_id"])
            continue
        p.counts["written" if ok else "failed"] += 1
        if not ok:
            log.error("dba update failed: %s", item)
    return changed


def recompute(p: Pass, docs: list[tuple[str, np.ndarray]], at: str) -> list[dict[str, Any]]:
    """Update actions: each (id, raw vector) augmented from its k nearest by raw vector."""
    return augment_rows(p, docs, search(p, docs, p.k + 1), at) if docs else []


def merge_entered(p: Pass, marked: dict[str, Marked], block: list[tuple[str, np.ndarray]],
                  known: dict[str, np.ndarray], at: str) -> tuple[list[dict[str, Any]], list[tuple[str, np.ndarray]]]:
    """(updates of the entered documents whose kept list holds and changed, the documents whose
    list does not hold: to search); a list the new documents left as it was is not written."""
    new = ([i for i, _ in block], np.stack([v for _, v in block]))
    actions, search_them = [], []
    for e in marked.values():
        top = merged_top(e.id, e.vector, e.marker, p.k, known, new, p.metric)
        if top is None:
            search_them.append((e.id, e.vector))
        elif top[0] != listed(e.marker, p.k):
            actions.append(action(p, e.id, e.vector, top, at, read=e))
    return actions, search_them


def block_updates(p: Pass, block: list[tuple[str, np.ndarray]], at: str) -> list[dict[str, Any]]:
    """The updates of ``block`` (documents not augmented yet) and of the augmented documents
    they entered (at most k per new document, the largest entries first)."""
    rows = search(p, block, REACH * p.k + 1, augmented_only=True)
    found = entered({i for i, _ in block}, rows, p.k)
    budget = p.k * max(p.planned, p.counts["documents"] + len(block)) - p.counts["neighbours"]
    chosen = sorted(found, key=lambda i: -found[i])[:max(budget, 0)]
    marked = read_marked(p.client, p.info.concrete, p.fields, chosen)  # still augmented
    lists = {i for e in marked.values() for i in listed(e.marker, p.k) or []}
    wanted = {h.id for row in rows for h in row[:p.k]} | lists
    known = {i: v for i, (v, _) in raw_vectors(p, block, wanted - set(marked)).items()}
    known.update((i, e.vector) for i, e in marked.items())
    new_ids = [i for i, _ in block]
    actions = [action(p, i, v, new_top(i, v, [h.id for h in row[:p.k]], new_ids, p.k, known, p.metric), at)
               for (i, v), row in zip(block, rows)]
    merged, search_them = merge_entered(p, marked, block, known, at)
    p.counts["documents"] += len(block)
    p.counts["neighbours"] += len(merged) + len(search_them)
    p.counts["searched"] += len(search_them)
    p.counts["deferred"] += len(found) - len(chosen)
    return actions + merged + recompute(p, search_them, at)


def incremental_block(p: Pass, block: list[tuple[str, np.ndarray]]) -> None:
    """Augment ``block`` and the neighbourhoods it entered (``block_updates``); an entered
    document written meanwhile by another pass is searched again, on what that pass wrote."""
    at = p.stamp()
    changed = write(p, block_updates(p, block, at))
    if changed:
        p.client.indices.refresh(index=p.info.concrete)
        again = [(e.id, e.vector) for e in read_marked(p.client, p.info.concrete, p.fields, changed).values()]
        p.counts["searched"] += len(again)
        write(p, recompute(p, again, at))


def not_augmented(fields: DbaFields, since: str | None = None) -> dict[str, Any]:
    """Documents with a vector and no raw copy (written after the last pass that saw them);
    ``since``: only those the worker wrote since then (an ingest's own)."""
    query: dict[str, Any] = {"bool": {"filter": [{"exists": {"field": fields.vector}}],
                            "must_not": [{"exists": {"field": fields.raw}}]}}
    if since:
        query["bool"]["filter"].append({"range": {fields.stamp: {"gte": since}}})
    return query


def window_start(started_at: float) -> str:
    """Where an ingest's window of documents opens: its job's start, less the slack."""
    return dt.datetime.fromtimestamp(started_at - SINCE_SLACK_S, dt.timezone.utc).isoformat(
        timespec="milliseconds")


def start(client: Elasticsearch, index: str, k: int | None = None, alpha: float | None = None,
          candidates: int | None = None, full: bool = False) -> Pass:
    """A pass over ``index``: (k, alpha) as given, else as recorded by the last pass a user ran,
    else the card's; ``candidates``: kNN num_candidates (default: ``Pass.wide``). Another k or
    alpha than the recorded one only for a ``full`` pass (the others would mix two settings)."""
    info = index_info(client, index)
    fields, meta = check_allowed(client, info)
    k0, a0 = card_setting(info)
    rec = meta.get("dba_setting") or {}
    chosen = int(k or rec.get("k") or k0), float(alpha if alpha is not None else rec.get("alpha", a0))
    if rec and not full and chosen != (int(rec["k"]), float(rec["alpha"])):
        raise IndexStateError(f"{info.name} is augmented with k={rec['k']}, alpha={rec['alpha']}",
                              hint="another setting needs every document again: add --full")
    return Pass(client, info, fields, *chosen, candidates)


def summary(p: Pass) -> dict[str, Any]:
    return {"index": p.info.concrete, "run": p.run, "k": p.k, "alpha": p.alpha, **p.counts,
            "total_s": round(time.monotonic() - p.started, 2)}


def meta_of(client: Elasticsearch, concrete: str) -> dict[str, Any]:
    return client.indices.get_mapping(index=concrete)[concrete]["mappings"].get("_meta") or {}


def update_meta(client: Elasticsearch, concrete: str, **changes: Any) -> None:
    """Set (or, with None, remove) keys of the index's ``_meta.es_metric``; the rest stays
    (index/record.py: guarded against concurrent writers)."""
    set_keys(client, concrete, **changes)


def remember(p: Pass) -> None:
    """After a pass the user ran: ingests augment what they write from now on, with this k/alpha."""
    update_meta(p.client, p.info.concrete, dba=True, dba_setting={"k": p.k, "alpha": p.alpha})


def augment_blocks(p: Pass, since: str | None, block: int = BLOCK, on_progress: Progress | None = None) -> None:
    """Augment, block by block, the documents not augmented yet (``since``: written since then)
    and the existing ones they entered."""
    for n, docs in enumerate(blocks(p.client, p.info, p.fields, not_augmented(p.fields, since), block)):
        if n:  # the next block reads the lists the last one wrote
            p.client.indices.refresh(index=p.info.concrete)
        incremental_block(p, docs)
        if on_progress:
            on_progress(p.counts["documents"])


def augment_new(client: Elasticsearch, index: str, *, since: str | None = None, k: int | None = None,
                alpha: float | None = None, candidates: int | None = None, block: int = BLOCK,
                on_progress: Progress | None = None, record: bool = False) -> dict[str, Any]:
    """Augment the documents not augmented yet (``since``: written since then) and the existing
    ones they entered; returns the counts (``documents`` new, ``neighbours`` recomputed, of
    them ``searched`` by kNN, ``written``, ``deferred``). ``record``: a pass the user asked for
    (see ``remember``)."""
    p = start(client, index, k, alpha, candidates)
    augment_blocks(p, since, block, on_progress)
    client.indices.refresh(index=p.info.concrete)
    log.info("dba: %d new documents of %s augmented, %d neighbours recomputed (%d deferred) in %.1f s",
             p.counts["documents"], p.info.concrete, p.counts["neighbours"], p.counts["deferred"],
             time.monotonic() - p.started)
    if record:
        remember(p)
    return summary(p)


def augment_if_recorded(client: Elasticsearch, index: str, started_at: float | None = None) -> dict[str, Any] | None:
    """After an ingest: augment what it wrote (the job started at ``started_at``, epoch s) when
    the index runs DBA after ingests; None when it does not."""
    if not runs_after_ingest(index_info(client, index)):
        return None
    return augment_new(client, index, since=window_start(started_at) if started_at else None)
