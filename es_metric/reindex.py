"""Blue/green reindex when the model changes.

1. create ``<alias>-<new model id>`` (the alias keeps serving the old index);
2. copy every document without its vector, with point-in-time + search_after + bulk (the
   ``_reindex`` API is not on every cluster);
3. re-embed every image through the Celery workers (``update`` by id);
4. verify document and vector counts; only then swap the alias in one atomic request.

The new index records ``reindex_state`` in its ``_meta``: an interrupted run is resumed by
running the command again, or abandoned with ``--abandon``. The old index stays until
``--delete-old``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Iterator

from elasticsearch import Elasticsearch
from elasticsearch.helpers import streaming_bulk

from .config import Settings
from .errors import IndexStateError
from .index import IndexInfo, count, index_info
from .ingest import enqueue, wait
from .mappings import BOOKKEEPING, IndexOptions, versioned_name

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


def gate_allows(card: dict, force: bool) -> None:
    gate = (card.get("metrics") or {}).get("gate") or {}
    if gate.get("passed") is False and not force:
        raise IndexStateError(
            f"model {card['model_id']} failed its evaluation gate (MAP@R "
            f"{gate.get('model_map_at_r', 0):.4f} vs {gate.get('against')} "
            f"{gate.get('baseline_map_at_r', 0):.4f})", hint="train a better model, or pass --force")


def _user_properties(client: Elasticsearch, old: IndexInfo) -> dict:
    props = client.indices.get_mapping(index=old.concrete)[old.concrete]["mappings"].get("properties", {})
    return {k: v for k, v in props.items() if k != old.vector_field and k not in BOOKKEEPING}


def _index_options(client: Elasticsearch, old: IndexInfo, card: dict) -> IndexOptions:
    props = client.indices.get_mapping(index=old.concrete)[old.concrete]["mappings"]["properties"]
    opts = props.get(old.vector_field, {}).get("index_options") or {}
    kind = opts.get("type", "hnsw")
    if kind.startswith("bbq") and int(card["dims"]) < 64:
        kind = "int8_hnsw"
    return IndexOptions(kind, opts.get("m", 16), opts.get("ef_construction", 100))


def prepare_target(client: Elasticsearch, old: IndexInfo, card: dict, model_path: str) -> str:
    """Create (or find, when resuming) the new versioned index, marked as building."""
    from .mappings import index_meta, new_index_body

    name = versioned_name(old.name, card["model_id"])
    if client.indices.exists(index=name):
        log.info("resuming reindex into %s", name)
        return name
    body = new_index_body(card, model_path, vector_field=old.vector_field,
                          options=_index_options(client, old, card))
    body["mappings"]["properties"].update(_user_properties(client, old))
    meta = index_meta(card, model_path, old.vector_field)
    meta["es_metric"]["reindex_state"] = {"state": "building", "from": old.concrete}
    body["mappings"]["_meta"] = meta
    settings = client.indices.get_settings(index=old.concrete)[old.concrete]["settings"]["index"]
    body["settings"]["number_of_replicas"] = int(settings.get("number_of_replicas", 0))
    client.indices.create(index=name, settings=body["settings"], mappings=body["mappings"])
    return name


def scroll_documents(client: Elasticsearch, index: str, excludes: list[str],
                     page: int = 500) -> Iterator[dict]:
    """Every document of ``index`` via point-in-time + search_after (a consistent snapshot)."""
    pit = client.open_point_in_time(index=index, keep_alive="5m")["id"]
    try:
        after = None
        while True:
            kw = {"search_after": after} if after else {}
            resp = client.search(pit={"id": pit, "keep_alive": "5m"}, size=page,
                                 sort=[{"_shard_doc": "asc"}], source_excludes=excludes,
                                 query={"match_all": {}}, **kw)
            hits = resp["hits"]["hits"]
            if not hits:
                return
            pit = resp.get("pit_id", pit)
            yield from hits
            after = hits[-1]["sort"]
    finally:
        client.close_point_in_time(id=pit)


def copy_documents(client: Elasticsearch, old: IndexInfo, target: str) -> list[dict]:
    """Copy non-vector fields; returns the re-embed items (id + image path) seen on the way."""
    items: list[dict] = []

    def actions():
        for hit in scroll_documents(client, old.concrete, [old.vector_field]):
            src = hit["_source"]
            if src.get("image_path"):
                items.append({"ref": src["image_path"], "id": hit["_id"], "fields": {}})
            src.pop("model_id", None)
            yield {"_op_type": "index", "_index": target, "_id": hit["_id"], "_source": src}

    for ok, info in streaming_bulk(client, actions(), chunk_size=500, max_retries=5, raise_on_error=True):
        if not ok:
            raise IndexStateError(f"copy into {target} failed: {info}")
    client.indices.refresh(index=target)
    return items


def vectors_in(client: Elasticsearch, index: str, field: str) -> int:
    client.indices.refresh(index=index)
    return int(client.count(index=index, query={"exists": {"field": field}})["count"])


def swap_alias(client: Elasticsearch, alias: str, old: str, new: str) -> None:
    """One atomic request: readers see the old index or the new one, never neither or both."""
    client.indices.update_aliases(actions=[{"remove": {"index": old, "alias": alias}},
                                           {"add": {"index": new, "alias": alias}}])


def _mark(client: Elasticsearch, index: str, state: str) -> None:
    meta = client.indices.get_mapping(index=index)[index]["mappings"].get("_meta") or {}
    meta.setdefault("es_metric", {}).setdefault("reindex_state", {})["state"] = state
    client.indices.put_mapping(index=index, meta=meta)


def reindex(settings: Settings, client: Elasticsearch, alias: str, model_path: str, card: dict, *,
            force: bool = False, delete_old: bool = False, timeout: float | None = None,
            on_progress: Callable[[int, int, int], None] | None = None) -> ReindexResult:
    old = index_info(client, alias)
    if old.name == old.concrete:
        raise IndexStateError(f"{alias!r} is an index, not an alias", hint="reindex works on es-metric aliases")
    if card["model_id"] == old.model_id:
        raise IndexStateError(f"{alias} already serves {old.model_id}")
    gate_allows(card, force)
    target = prepare_target(client, old, card, model_path)
    items = copy_documents(client, old, target)
    job = enqueue(settings, client, alias, items, mode="update", target=target)
    done, failed = wait(settings, job, on_progress=on_progress, timeout=timeout)
    docs_old, docs_new = count(client, old.concrete), count(client, target)
    expected = len({i["id"] for i in items})
    vec_new = vectors_in(client, target, old.vector_field)
    if docs_new != docs_old or vec_new + failed != expected or (failed and not force):
        raise IndexStateError(
            f"verification failed: {docs_new}/{docs_old} documents copied, {vec_new}/{expected} "
            f"images re-embedded, {failed} failed; the alias still points at {old.concrete}",
            hint=f"see `esm failures {alias}`, then run the command again (it resumes), "
                 "pass --force to accept the failures, or --abandon")
    swap_alias(client, alias, old.concrete, target)
    _mark(client, target, "live")
    if delete_old:
        client.indices.delete(index=old.concrete)
    return ReindexResult(alias, old.concrete, target, docs_new, vec_new, failed, True, delete_old)


def abandon(client: Elasticsearch, alias: str, model_id: str) -> str:
    """Delete a half-built target index (never the one the alias points at)."""
    name = versioned_name(alias, model_id)
    if client.indices.exists_alias(name=alias, index=name):
        raise IndexStateError(f"{name} is live behind {alias}; refusing to delete it")
    client.options(ignore_status=404).indices.delete(index=name)
    return name
