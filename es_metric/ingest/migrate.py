"""Change the model of an index the shop owns, in place (copying it is not an option).

1. add the new model's vector field beside the old one (``<field>__<new model id>``) and record
   the change in ``_meta.es_metric.migration`` (state ``filling``); search keeps the old field;
2. fill it through the workers (``vector_only`` jobs: the new field and nothing else), while a
   follower embeds every new or changed document with both models; repeat for what is still
   missing after the writers finished, until nothing is;
3. verify: every document with an image has the new vector, and a kNN probe on the new field
   finds its own document first;
4. switch: ``_meta.es_metric`` names the new model and field (state ``switched``); search now
   uses only the new field, and accepts the old model's stamp ``model_id`` on a hit (its vector
   in the new field can only come from the new model, which alone writes that field);
5. after searches' cached index info has expired, stamp every document with the new model and
   clear the old field (and its DBA raw copy), then drop the migration record.

Searches never fail and never mix models: each reads one field, written by one model. An
interrupted change resumes when run again.
"""
from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from typing import Any, Iterator

from elasticsearch import Elasticsearch
from elasticsearch.helpers import scan, streaming_bulk

from ..config import Settings
from ..errors import IndexStateError
from ..index.fields import DocFields
from ..index.indices import INFO_TTL_S, IndexInfo, index_info
from ..index.layout import VectorLayout
from ..index.record import ChangeResult, Migration, read_mappings, set_keys, update_record
from ..index.mappings import IndexOptions, index_meta, vector_field_body
from ..index.vectors import hit_vector
from .enqueue import enqueue, wait
from .photos import leaf_action
from ..model.card import gate_allows
from ..types import ImageItem, ModelCard, OtherModel
from .reindex import wait_for_writers
from .sources import Source

log = logging.getLogger(__name__)
MAX_FILL_PASSES = 5


@dataclass
class MigrationResult:
    index: str
    old_model: str
    new_model: str
    old_field: str
    new_field: str
    documents: int        # documents with an image
    vectors: int          # of them with the new model's vector
    failed: int
    switched: bool
    cleared: int = 0      # documents whose old vector was cleared


def model_field(vector_field: str, model_id: str) -> str:
    """The new model's field: the base name and the model id (a field per model, so two models'
    vectors can never share one)."""
    return f"{vector_field.split('__')[0]}__{re.sub(r'[^a-z0-9_-]', '_', model_id.lower())}"


def second_model(info: IndexInfo) -> OtherModel | None:
    """The job overrides that embed with the model filling its field, while one does."""
    moving = info.migration
    if moving is None or moving.state != "filling":
        return None
    return {"model_id": moving.model_id, "model_path": moving.model_path,
            "vector_field": moving.vector_field, "vector_only": True}


def start(client: Elasticsearch, info: IndexInfo, card: ModelCard, model_path: str) -> Migration:
    """Add the new field and record the migration (idempotent: a run for the same model
    resumes). Another model's migration under way is refused."""
    new_field = model_field(info.vector_field, card["model_id"])
    moving = Migration("filling", card["model_id"], model_path, new_field, info.model_id,
                       info.vector_field, time.time())

    def begin(mine: dict[str, Any], mappings: dict[str, Any]) -> ChangeResult | None:
        nonlocal moving
        if mine.get("migration"):  # read under the lock: a change another run recorded wins
            moving = _resume_or_refuse(info, Migration.from_record(mine["migration"]), card)
            return None
        opts = DocFields.mapping_of(mappings.get("properties") or {}, info.vector_field).get("index_options") or {}
        kind = opts.get("type", "hnsw")
        options = IndexOptions("int8_hnsw" if kind.startswith("bbq") and int(card["dims"]) < 64 else kind,
                               opts.get("m", 16), opts.get("ef_construction", 100))
        mine["migration"] = moving.record()
        return ChangeResult(info.fields.with_vector(new_field).properties(vector_field_body(card, options)))
    update_record(client, info.concrete, begin)
    return moving


def _resume_or_refuse(info: IndexInfo, moving: Migration, card: ModelCard) -> Migration:
    if moving.model_id == card["model_id"]:
        return moving
    raise IndexStateError(f"{info.name}: a change to model {moving.model_id} is under way",
                          hint=f"finish it with `esm reindex {info.name} --model {moving.model_path}`")


def _moving(info: IndexInfo) -> Migration:
    """The model change the index records as under way (these steps run only while it does)."""
    if info.migration is None:
        raise IndexStateError(f"index {info.name} records no model change under way")
    return info.migration


def missing_query(fields: DocFields) -> dict:
    """Documents with an embedded image but no vector in ``fields.vector``."""
    return {"bool": {"filter": [{"exists": {"field": fields.image_path}}],
                     "must_not": [fields.has_vector()]}}


def refill_item(fields: DocFields, hit: dict) -> ImageItem:
    """The task item re-embedding a document: its image, or every photo of a multi-photo one."""
    refs = fields.layout.photo_refs(hit["_source"])
    if refs:
        return {"ref": refs[0], "refs": refs, "id": hit["_id"], "fields": {}}
    return {"ref": fields.read(hit["_source"], fields.image_path), "id": hit["_id"], "fields": {}}


def fill(settings: Settings, client: Elasticsearch, info: IndexInfo, timeout: float | None) -> int:
    """Embed, with the new model, every document that has an image and no new vector yet;
    again for what writers added meanwhile. Returns the images that failed."""
    failed = 0
    fields = info.fields
    reads = [fields.image_path, *([f"{fields.photos}.ref"] if fields.photos else [])]
    for _ in range(MAX_FILL_PASSES):
        wait_for_writers(settings, info.concrete, timeout)
        client.indices.refresh(index=info.concrete)
        missing = missing_query(fields.with_vector(_moving(info).vector_field))
        items = [refill_item(fields, h) for h in scan(client, index=info.concrete, _source=reads,
                                                      query={"query": missing})]
        if not items:
            break
        job = enqueue(settings, client, info.name, Source(items), mode="update",
                      model=second_model(info))
        failed += wait(settings, job, timeout=timeout)[1]
        if failed:
            break
    return failed


def probe(client: Elasticsearch, index: str, layout: VectorLayout) -> tuple[str, list[float] | None] | None:
    """(id, vector) of one document with a vector in ``layout`` (a photo's, nested); None: none."""
    kind: dict[str, Any] = {"source": [layout.photos]} if layout.nested else \
        {"source": False, "docvalue_fields": [layout.vector]}
    hits = client.search(index=index, size=1, query=layout.has_vector(), **kind)["hits"]["hits"]
    if not hits:
        return None
    vectors = layout.photo_vectors(hits[0].get("_source")) if layout.nested else [hit_vector(hits[0], layout.vector)]
    return hits[0]["_id"], (vectors[0] if vectors else None)


def verify(client: Elasticsearch, info: IndexInfo) -> tuple[int, int]:
    """(documents with an image, of them with the new vector); IndexStateError unless every
    one has it and a kNN probe on the new field finds its own document first."""
    field, fields = _moving(info).vector_field, info.fields
    client.indices.refresh(index=info.concrete)
    images = int(client.count(index=info.concrete, query={"exists": {"field": fields.image_path}})["count"])
    missing = int(client.count(index=info.concrete, query=missing_query(fields.with_vector(field)))["count"])
    if missing:
        raise IndexStateError(f"{missing} of {images} documents have no vector of the new model",
                              hint="see `esm failures`; run the command again to retry")
    found = probe(client, info.concrete, fields.with_vector(field).layout)
    if found:
        top = client.search(index=info.concrete, knn={"field": field, "k": 1, "num_candidates": 10,
                                                      "query_vector": found[1]},
                            source=False)["hits"]["hits"]
        if not top or top[0]["_id"] != found[0]:
            raise IndexStateError(f"kNN on {field} does not find document {found[0]} first",
                                  hint="check the mapping of the new field")
    return images, images - missing


def switch(client: Elasticsearch, info: IndexInfo, card: ModelCard) -> None:
    """Search moves to the new field in one mapping update."""
    moving = _moving(info)
    new_fields = info.fields.with_vector(moving.vector_field)

    def to_new(mine: dict[str, Any], _mappings: dict[str, Any]) -> None:
        new = index_meta(card, moving.model_path, new_fields,
                         dba=bool(mine.get("dba")))["es_metric"]  # the shop's choice stays
        new["image_roots"] = mine.get("image_roots", [])
        new["migration"] = moving.switched(time.time()).record()
        mine.clear()
        mine.update(new)
    update_record(client, info.concrete, to_new)


def clear_actions(client: Elasticsearch, info: IndexInfo, old: str) -> Iterator[dict]:
    """Updates stamping each document with the new model and clearing the old vector (and its
    DBA raw copy and marker, where mapped; in each photo, for a multi-photo index)."""
    fields = info.fields
    was = fields.with_vector(old)
    query = {"bool": {"filter": [{"exists": {"field": fields.image_path}}], "minimum_should_match": 1,
                      "should": [was.has_vector(),
                                 {"bool": {"must_not": {"term": {fields.model_id: info.model_id}}}}]}}
    if was.photos:  # the photos read and written back without the old vector (layout.py)
        return photo_updates(client, info.concrete, was, query, {fields.model_id: info.model_id})
    mapped = read_mappings(client, info.concrete).get("properties", {})
    derived = [f for f in (was.raw_vector, was.dba_marker) if DocFields.mapping_of(mapped, f)]
    doc = fields.doc({old: None, **{f: None for f in derived}, fields.model_id: info.model_id})
    return ({"_op_type": "update", "_index": info.concrete, "_id": h["_id"], "doc": doc}
            for h in scan(client, index=info.concrete, query={"query": query}, _source=False))


def photo_updates(client: Elasticsearch, index: str, gone: DocFields, query: dict,
                  stamp: dict | None = None) -> Iterator[dict]:
    """Updates removing ``gone``'s vector from every photo of the documents ``query`` finds
    (and setting ``stamp``), each only if the document did not change since it was read."""
    for hit in scan(client, index=index, query={"query": query, "seq_no_primary_term": True},
                    _source=[str(gone.photos)]):
        action = leaf_action(index, gone, hit, None, stamp)
        if action:
            yield action


def clear_old(settings: Settings, client: Elasticsearch, info: IndexInfo,
              timeout: float | None) -> int:
    """Stamp every document with the new model and clear the old vector; drop the record."""
    time.sleep(INFO_TTL_S + 1)  # searches that read the index info before the switch are done
    wait_for_writers(settings, info.concrete, timeout)
    old = _moving(info).from_vector_field or info.vector_field
    n = 0
    for _ in range(MAX_FILL_PASSES):  # again for documents a writer changed under a pass
        results = [ok for ok, _ in streaming_bulk(client, clear_actions(client, info, old),
                                                  raise_on_error=False, max_retries=5)]
        n += sum(results)
        client.indices.refresh(index=info.concrete)
        if all(results):
            break

    def done(mine: dict[str, Any], _mappings: dict[str, Any]) -> None:
        moved = mine.pop("migration", None) or {}
        mine["previous_model"] = {"model_id": moved.get("from_model_id"), "vector_field": old}
    update_record(client, info.concrete, done)
    client.indices.refresh(index=info.concrete)
    return n


def abandon(client: Elasticsearch, index: str, model_id: str) -> str:
    """Give up a change to ``model_id`` that has not switched yet: clear the new field's
    values and drop the record (the empty field stays in the mapping); returns the field."""
    info = index_info(client, index)
    moving = info.migration
    if moving is None or moving.model_id != model_id:
        raise IndexStateError(f"no change to model {model_id} is under way on {index}")
    if moving.state != "filling":
        raise IndexStateError(f"{index} already searches with {model_id}; finish the change",
                              hint=f"run `esm reindex {index} --model {moving.model_path}`")
    set_keys(client, info.concrete, migration=None)  # the follower stops filling it
    field = moving.vector_field
    gone = info.fields.with_vector(field)
    actions = photo_updates(client, info.concrete, gone, gone.has_vector()) if gone.photos else \
        ({"_op_type": "update", "_index": info.concrete, "_id": h["_id"], "doc": info.fields.doc({field: None})}
         for h in scan(client, index=info.concrete, _source=False, query={"query": gone.has_vector()}))
    for _ in streaming_bulk(client, actions, raise_on_error=False, max_retries=5):
        pass
    client.indices.refresh(index=info.concrete)
    return field


def change_model(settings: Settings, client: Elasticsearch, index: str, model_path: str,
                 card: ModelCard, *, force: bool = False, timeout: float | None = None) -> MigrationResult:
    """Steps 1-5 of the module doc on an existing (non-alias) index."""
    info = index_info(client, index)
    if card["model_id"] == info.model_id and not info.migration:
        raise IndexStateError(f"{index} already serves {info.model_id}")
    gate_allows(card, force)
    moving = info.migration
    old_model = (moving.from_model_id if moving else None) or info.model_id
    old_field = (moving.from_vector_field if moving else None) or info.vector_field
    if moving is None or moving.state != "switched":
        start(client, info, card, model_path)
        info = index_info(client, index)
        failed = fill(settings, client, info, timeout)
        if failed and not force:
            raise IndexStateError(f"{failed} images could not be embedded with the new model; "
                                  "search stays on the old one",
                                  hint="see `esm failures`, then run again (or --force)")
        if not failed:
            verify(client, info)
        switch(client, info, card)
        info = index_info(client, index)
    else:
        failed = 0
    cleared = clear_old(settings, client, info, timeout)
    images = int(client.count(index=info.concrete,
                              query={"exists": {"field": info.fields.image_path}})["count"])
    vectors = int(client.count(index=info.concrete, query=info.fields.has_vector())["count"])
    return MigrationResult(index, old_model, card["model_id"], old_field, info.vector_field,
                           images, vectors, failed, True, cleared)
